//! The validation worker: decides scans and annulments, and applies inventory.
//!
//! [`Validator`] runs the domain rules against a [`TicketStore`] and commits each
//! decision with its state change atomically (optimistic: read, decide in Rust,
//! commit if the token is unchanged, else read again); an annulment
//! ([`Validator::annul`]) is committed the same way. [`InventoryApplier`] checks
//! an inventory batch's references against the store and applies it whole.
//! Neither knows which store or transport it runs on.

mod inventory;

#[cfg(feature = "distributed")]
pub mod distributed;

pub use inventory::{InventoryApplier, InventorySizeGauge};

use presence_domain::annul::{self, AnnulFacts, DEFAULT_ANNUL_WINDOW_MS};
use presence_domain::history::MAX_HISTORY_ENTRIES;
use presence_domain::offline;
use presence_domain::rules::{self, TicketFacts};
use presence_domain::time::unix_millis;
use presence_domain::{
    AnnulOutcome, AnnulRequest, Annulled, AnnulledPassage, Decision, DecisionEvent, DeviceId,
    GateId, RememberedDecision, ScanId, ScanKey, ScanKind, ScanRecord, SecretDigest, Status, Token,
    VenueId, barcode,
};
use presence_ports::{
    AnnulCommand, Answer, Commit, CommitOutcome, DecisionSink, DeviceStore, ScanCommand,
    ScanContext, StoreError, Stores, TicketHistory, TicketStore, TransportError,
};
use std::sync::Arc;
use std::time::SystemTime;
use tracing::{Instrument, field};

/// How often one scan re-reads a token that others keep changing before giving
/// up with "unavailable". A token changes state a handful of times a night, so
/// running out means something is wrong, not busy.
const MAX_COMMIT_ATTEMPTS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    /// Nothing was decided: the store failed before the commit.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("token kept changing; gave up after {MAX_COMMIT_ATTEMPTS} attempts")]
    Contention,
    /// The commit was sent but its answer never came (a timeout, a connection
    /// lost): the decision may be recorded. Only reading the store again tells
    /// ([`Validator::redeliver`]).
    #[error("commit outcome unknown: {0}")]
    CommitUnknown(String),
    /// Decided and recorded, but not on the decision stream yet.
    #[error("decision could not be published: {0}")]
    Publish(#[from] TransportError),
}

impl ValidatorError {
    /// Whether this scan's decision may be recorded without having been
    /// published: the scan is not finished until [`Validator::redeliver`] has
    /// read the store and published whatever it finds.
    pub fn may_be_recorded(&self) -> bool {
        matches!(self, Self::CommitUnknown(_) | Self::Publish(_))
    }
}

/// Decides scans. Cheap to clone.
#[derive(Clone)]
pub struct Validator {
    tickets: Arc<dyn TicketStore>,
    devices: Arc<dyn DeviceStore>,
    decisions: Arc<dyn DecisionSink>,
    /// How long after its decision a passage may be annulled.
    annul_window_ms: u64,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator").finish_non_exhaustive()
    }
}

/// How a decision came about, which decides whether it is published.
enum Decided {
    /// Decided now (or rejected by rule 1): publish.
    Fresh(Decision),
    /// Remembered from an earlier request of the same scan key.
    Remembered(RememberedDecision),
    /// Refused for the device's credentials: nothing was decided about a
    /// ticket, so it is neither remembered nor published.
    Refused(Decision),
}

/// Whether a scanner's request may go on to the ticket rules
/// ([`Validator::admit_device`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The device is configured at that venue and gate, as `gate_name`.
    Admitted { gate_name: String },
    /// Rule 1: the device is not configured at that venue and gate. A
    /// BAD_REQUEST decision: published, never remembered.
    NotConfigured(Decision),
    /// The device's credentials (SPEC §7): UNAUTHORIZED (device secret missing
    /// or wrong) or FORBIDDEN (device revoked). Nothing is decided, remembered
    /// or published.
    Refused(Decision),
}

impl Validator {
    pub fn new(stores: &Stores, decisions: Arc<dyn DecisionSink>) -> Self {
        Self {
            tickets: stores.tickets.clone(),
            devices: stores.devices.clone(),
            decisions,
            annul_window_ms: DEFAULT_ANNUL_WINDOW_MS,
        }
    }

    /// Allows annulments of passages decided at most `window_ms` ago
    /// (`PRESENCE_ANNUL_WINDOW_MS`; [`DEFAULT_ANNUL_WINDOW_MS`] otherwise).
    pub fn with_annul_window(self, window_ms: u64) -> Self {
        Self {
            annul_window_ms: window_ms,
            ..self
        }
    }

    /// Decides one scan, records it, and publishes it to the decision sink.
    ///
    /// A retry of an already decided scan key returns the first decision with the
    /// first scan's id. It is published again only when it is a redelivery of the
    /// very same scan (same scan id, e.g. a message transport retrying after a
    /// crash), so the decision stream holds each scan once after deduplication by
    /// scan id and never counts a client retry as a second scan.
    pub async fn decide(&self, command: &ScanCommand) -> Result<Answer, ValidatorError> {
        let request = &command.request;
        let span = tracing::info_span!(
            "scan",
            scan_id = %command.scan_id,
            kind = %command.kind,
            offline = command.shown.is_some(),
            venue = %request.venue_id,
            gate = %request.gate_id,
            device = %request.device_id,
            status = field::Empty,
        );
        async move {
            let decided_at = unix_millis(SystemTime::now());
            let (decided, token) = self.decide_once(command, decided_at).await?;
            let answer = match decided {
                Decided::Fresh(decision) => {
                    self.publish(command, &token, &decision, decided_at).await?;
                    Answer {
                        scan_id: command.scan_id.clone(),
                        decision,
                    }
                }
                Decided::Refused(decision) => Answer {
                    scan_id: command.scan_id.clone(),
                    decision,
                },
                Decided::Remembered(remembered) => {
                    if remembered.scan_id == command.scan_id {
                        self.publish(command, &token, &remembered.decision, remembered.decided_at)
                            .await?;
                    }
                    Answer {
                        scan_id: remembered.scan_id,
                        decision: remembered.decision,
                    }
                }
            };
            tracing::Span::current().record("status", answer.decision.status.as_str());
            Ok(answer)
        }
        .instrument(span)
        .await
    }

    /// Finishes a scan whose decision may already be recorded: one that arrives
    /// after its requester stopped waiting, or one whose commit or publish
    /// failed. A decision already recorded for this very scan (a redelivery
    /// after a crash, a commit whose answer was lost, a failed publish) is
    /// published and returned; nothing new is decided, so no state changes
    /// behind an answer that said nothing happened.
    pub async fn redeliver(&self, command: &ScanCommand) -> Result<Option<Answer>, ValidatorError> {
        let (key, context) = self.read_scan(command).await?;
        match context.remembered {
            Some(remembered) if remembered.scan_id == command.scan_id => {
                self.publish(
                    command,
                    &key.token,
                    &remembered.decision,
                    remembered.decided_at,
                )
                .await?;
                Ok(Some(Answer {
                    scan_id: remembered.scan_id,
                    decision: remembered.decision,
                }))
            }
            _ => Ok(None),
        }
    }

    /// Rule 1 and the device's credentials (SPEC §7): the one step every
    /// request of a scanner passes before anything about a ticket is read, a
    /// scan's as well as an offline upload's or an annulment's. Reads the device
    /// and the venue together (one round trip), every time: a revocation or a
    /// re-init is in force for the next request, in every validator.
    pub async fn admit_device(
        &self,
        venue_id: &VenueId,
        device_id: DeviceId,
        gate_id: GateId,
        presented: Option<&SecretDigest>,
    ) -> Result<Admission, StoreError> {
        let (device, venue) =
            tokio::try_join!(self.devices.device(device_id), self.devices.venue(venue_id))?;
        let device = match rules::check_device_at(venue_id, device_id, gate_id, device.as_ref()) {
            Ok(device) => device,
            Err(rejection) => return Ok(Admission::NotConfigured(rejection)),
        };
        let refusal = rules::check_device_access(venue.as_ref(), device, presented).err();
        Ok(match refusal {
            Some(refusal) => {
                tracing::info!(
                    device = %device_id,
                    status = refusal.status.as_str(),
                    reason = %refusal.message,
                    "device refused"
                );
                Admission::Refused(refusal)
            }
            None => Admission::Admitted {
                gate_name: device.gate_name.clone(),
            },
        })
    }

    /// The scan key and what the store holds for it, with SPEC §7's lookup: a
    /// token that is a known ticket is that ticket; otherwise a token
    /// `<prefix>:<6 digits>` whose prefix is a rotating ticket is that ticket
    /// with a code, and the key is the ticket's token (state, retries and stats
    /// are per ticket). Only a token that names no ticket costs a second read.
    async fn read_scan(&self, command: &ScanCommand) -> Result<(ScanKey, ScanContext), StoreError> {
        let gate_id = command.request.gate_id;
        let key = command.request.key(command.kind);
        let context = self.tickets.scan_context(&key, gate_id).await?;
        if context.ticket.is_some() || context.remembered.is_some() {
            return Ok((key, context));
        }
        let Some((prefix, _code)) = barcode::split(key.token.as_str()) else {
            return Ok((key, context));
        };
        let ticket_key = ScanKey {
            token: Token::new(prefix),
            ..key.clone()
        };
        let ticket_context = self.tickets.scan_context(&ticket_key, gate_id).await?;
        let rotating = ticket_context
            .ticket
            .as_ref()
            .is_some_and(|ticket| ticket.rotation.is_some());
        Ok(if rotating {
            (ticket_key, ticket_context)
        } else {
            (key, context)
        })
    }

    /// Commits a decision. A store that became unreachable may have applied the
    /// commit before the connection broke: only reading it back tells
    /// ([`ValidatorError::CommitUnknown`]).
    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, ValidatorError> {
        self.tickets
            .commit(commit)
            .await
            .map_err(|error| match error {
                StoreError::Unavailable(reason) => ValidatorError::CommitUnknown(reason),
                error => error.into(),
            })
    }

    /// Decides a scan; returns how, and the ticket token it is recorded under.
    async fn decide_once(
        &self,
        command: &ScanCommand,
        decided_at: i64,
    ) -> Result<(Decided, Token), ValidatorError> {
        let request = &command.request;
        // The device and the scan's keys are read side by side: one round trip
        // to Redis instead of two. Both are read afresh for every scan, so a
        // revocation is in force for the next scan as before; what was read
        // about the ticket goes unused when the device is refused.
        let (admission, (key, mut context)) = tokio::try_join!(
            self.admit_device(
                &request.venue_id,
                request.device_id,
                request.gate_id,
                command.device_secret.as_ref(),
            ),
            self.read_scan(command),
        )?;
        match admission {
            Admission::Admitted { .. } => {}
            Admission::NotConfigured(rejection) => {
                return Ok((Decided::Fresh(rejection), request.token.clone()));
            }
            Admission::Refused(refusal) => {
                return Ok((Decided::Refused(refusal), request.token.clone()));
            }
        }
        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            if attempt > 0 {
                context = self.tickets.scan_context(&key, request.gate_id).await?;
            }
            if let Some(remembered) = context.remembered {
                return Ok((Decided::Remembered(remembered), key.token));
            }
            let facts = TicketFacts {
                ticket: context.ticket.as_ref(),
                event: context.event.as_ref(),
                gate: context.gate.as_ref(),
            };
            let outcome = match command.shown {
                Some(shown) => offline::decide(command.kind, shown, request, facts, &context.state),
                None => rules::decide(command.kind, request, facts, &context.state),
            };
            // Only a known ticket has a history: nobody can look an unknown one up.
            let history = context.ticket.is_some().then(|| {
                ScanRecord::of(
                    &command.scan_id,
                    command.kind,
                    request,
                    &rules::entry_of(request, facts).gate_name,
                    &outcome.decision,
                    decided_at,
                    command.shown.is_some(),
                )
                .replacing(&context.state, outcome.next_state.is_some())
            });
            let remembered = RememberedDecision {
                scan_id: command.scan_id.clone(),
                decision: outcome.decision,
                decided_at,
            };
            let commit = Commit {
                key: key.clone(),
                expected_version: context.state.version,
                next_state: outcome.next_state,
                remembered,
                history,
            };
            let decision = commit.remembered.decision.clone();
            let token = commit.key.token.clone();
            let committed = self.commit(commit).await?;
            match committed {
                CommitOutcome::Committed => return Ok((Decided::Fresh(decision), token)),
                CommitOutcome::AlreadyDecided(first) => {
                    return Ok((Decided::Remembered(first), token));
                }
                CommitOutcome::Conflict => {
                    tracing::debug!("token changed while deciding; deciding again")
                }
            }
        }
        Err(ValidatorError::Contention)
    }

    /// Publishes a decision about `token`: the ticket's token, without a
    /// rotating barcode's code.
    async fn publish(
        &self,
        command: &ScanCommand,
        token: &Token,
        decision: &Decision,
        decided_at: i64,
    ) -> Result<(), ValidatorError> {
        let event = scan_event(
            command,
            command.scan_id.clone(),
            token.clone(),
            decision.clone(),
            decided_at,
        );
        self.decisions
            .publish(event)
            .await
            .map_err(ValidatorError::from)
    }

    /// Decides one annulment (SPEC §6), records it, and publishes it.
    ///
    /// Rule 1 and the device's credentials come first, as for a scan. The
    /// annulled scan's ticket is found by the scan's id and the annulment
    /// decided from the ticket's history ([`annul::decide`]). One carried out
    /// is committed like a scan: only if the ticket is unchanged since it was
    /// read, else read and decided again, so of an annulment and a scan racing
    /// on one ticket exactly one wins, and of two annulments of one passage the
    /// first (its remembered key) wins. A refusal changes and remembers nothing
    /// and is published. An annulment of an annulled scan answers the first
    /// annulment with its scan id, published again only for a redelivery of
    /// that very annulment (as [`Validator::decide`] does for a scan).
    pub async fn annul(&self, command: &AnnulCommand) -> Result<Answer, ValidatorError> {
        let request = &command.request;
        let span = tracing::info_span!(
            "annul",
            scan_id = %command.scan_id,
            annuls = %request.scan_id,
            venue = %request.venue_id,
            gate = %request.gate_id,
            device = %request.device_id,
            status = field::Empty,
        );
        async move {
            let answer = self.annul_once(command).await?;
            tracing::Span::current().record("status", answer.decision.status.as_str());
            Ok(answer)
        }
        .instrument(span)
        .await
    }

    async fn annul_once(&self, command: &AnnulCommand) -> Result<Answer, ValidatorError> {
        let request = &command.request;
        let decided_at = unix_millis(SystemTime::now());
        let answer = |decision| Answer {
            scan_id: command.scan_id.clone(),
            decision,
        };
        let gate_name = match self
            .admit_device(
                &request.venue_id,
                request.device_id,
                request.gate_id,
                command.device_secret.as_ref(),
            )
            .await?
        {
            Admission::Admitted { gate_name } => gate_name,
            Admission::NotConfigured(rejection) => {
                let unknown = Publication::refused(Token::new(""), String::new());
                self.publish_annulment(command, &unknown, &rejection, decided_at)
                    .await?;
                return Ok(answer(rejection));
            }
            Admission::Refused(refusal) => return Ok(answer(refusal)),
        };
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let (token, history) = self.annulled_ticket(&request.scan_id).await?;
            let allowed = match self.judge_annulment(request, &history, decided_at) {
                AnnulOutcome::Refused(decision) => {
                    // The ticket is named only when it is this venue's (a
                    // NOT_FOUND may be another venue's ticket).
                    let named = history.ticket.is_some() && decision.status != Status::NotFound;
                    let token = if named { token } else { Token::new("") };
                    let refused = Publication::refused(token, gate_name);
                    self.publish_annulment(command, &refused, &decision, decided_at)
                        .await?;
                    return Ok(answer(decision));
                }
                AnnulOutcome::AlreadyAnnulled(annulled) => {
                    return self.answer_annulled(command, token, annulled).await;
                }
                AnnulOutcome::Annul(allowed) => allowed,
            };
            let commit = Commit {
                key: allowed.key,
                expected_version: history.state.version,
                next_state: Some(allowed.next_state),
                remembered: RememberedDecision {
                    scan_id: command.scan_id.clone(),
                    decision: allowed.decision.clone(),
                    decided_at,
                },
                history: Some(annul::record(
                    &command.scan_id,
                    request,
                    &gate_name,
                    &allowed.decision,
                    decided_at,
                )),
            };
            let committed = self.commit(commit).await?;
            match committed {
                CommitOutcome::Committed => {
                    let done = Publication {
                        token,
                        gate_name,
                        passage: Some(allowed.passage),
                    };
                    self.publish_annulment(command, &done, &allowed.decision, decided_at)
                        .await?;
                    return Ok(answer(allowed.decision));
                }
                CommitOutcome::AlreadyDecided(first) => {
                    let annulled = Annulled {
                        first,
                        gate_name,
                        passage: allowed.passage,
                    };
                    return self.answer_annulled(command, token, annulled).await;
                }
                CommitOutcome::Conflict => {
                    tracing::debug!("ticket changed while annulling; deciding again")
                }
            }
        }
        Err(ValidatorError::Contention)
    }

    /// Finishes an annulment whose decision may already be recorded, as
    /// [`Validator::redeliver`] does for a scan: when this very annulment was
    /// carried out, it is published and answered; otherwise `None`, and
    /// nothing is decided.
    pub async fn redeliver_annul(
        &self,
        command: &AnnulCommand,
    ) -> Result<Option<Answer>, ValidatorError> {
        let (token, history) = self.annulled_ticket(&command.request.scan_id).await?;
        let now = unix_millis(SystemTime::now());
        match self.judge_annulment(&command.request, &history, now) {
            AnnulOutcome::AlreadyAnnulled(annulled)
                if annulled.first.scan_id == command.scan_id =>
            {
                self.answer_annulled(command, token, annulled)
                    .await
                    .map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The annul rule at `now`, on what the store holds of the ticket whose
    /// history has the annulled scan.
    fn judge_annulment(
        &self,
        request: &AnnulRequest,
        history: &TicketHistory,
        now: i64,
    ) -> AnnulOutcome {
        let facts = AnnulFacts {
            ticket: history.ticket.as_ref(),
            event: history.event.as_ref(),
            state: &history.state,
            history: &history.scans,
        };
        annul::decide(request, facts, now, self.annul_window_ms)
    }

    /// The ticket whose history has the scan `scan_id`, and that history (all
    /// of it that is kept); an empty history when no ticket's has it.
    async fn annulled_ticket(
        &self,
        scan_id: &ScanId,
    ) -> Result<(Token, TicketHistory), StoreError> {
        let Some(token) = self.tickets.scan_token(scan_id).await? else {
            return Ok((Token::new(""), TicketHistory::default()));
        };
        let history = self
            .tickets
            .ticket_history(&token, MAX_HISTORY_ENTRIES)
            .await?;
        Ok((token, history))
    }

    /// The answer of an annulment carried out earlier, published again only
    /// when this command is that annulment (a redelivery).
    async fn answer_annulled(
        &self,
        command: &AnnulCommand,
        token: Token,
        annulled: Annulled,
    ) -> Result<Answer, ValidatorError> {
        let Annulled {
            first,
            gate_name,
            passage,
        } = annulled;
        if first.scan_id == command.scan_id {
            let done = Publication {
                token,
                gate_name,
                passage: Some(passage),
            };
            self.publish_annulment(command, &done, &first.decision, first.decided_at)
                .await?;
        }
        Ok(Answer {
            scan_id: first.scan_id,
            decision: first.decision,
        })
    }

    /// Publishes an annulment's decision.
    async fn publish_annulment(
        &self,
        command: &AnnulCommand,
        publication: &Publication,
        decision: &Decision,
        decided_at: i64,
    ) -> Result<(), ValidatorError> {
        let event = annulment_event(
            command,
            command.scan_id.clone(),
            publication.clone(),
            decision.clone(),
            decided_at,
        );
        self.decisions
            .publish(event)
            .await
            .map_err(ValidatorError::from)
    }
}

/// The decision event of a scan: `scan_id` the scan's the decision was made
/// for, `token` the ticket's it is recorded under.
pub(crate) fn scan_event(
    command: &ScanCommand,
    scan_id: ScanId,
    token: Token,
    decision: Decision,
    decided_at: i64,
) -> DecisionEvent {
    let request = &command.request;
    DecisionEvent {
        scan_id,
        kind: command.kind,
        decision,
        token,
        venue_id: request.venue_id.clone(),
        gate_id: request.gate_id,
        gate_name: request.gate_name.clone(),
        device_id: request.device_id,
        device_os: Some(request.device_os),
        channel_id: request.channel_id.clone(),
        scan_time: request.scan_time,
        decided_at,
        offline: command.shown.is_some(),
        shown: command.shown,
        annuls: None,
        annulled: None,
    }
}

/// The decision event of an annulment. It has no scanner time: its scan time
/// is its decision time.
pub(crate) fn annulment_event(
    command: &AnnulCommand,
    scan_id: ScanId,
    publication: Publication,
    decision: Decision,
    decided_at: i64,
) -> DecisionEvent {
    let request = &command.request;
    DecisionEvent {
        scan_id,
        kind: ScanKind::Annul,
        decision,
        token: publication.token,
        venue_id: request.venue_id.clone(),
        gate_id: request.gate_id,
        gate_name: publication.gate_name,
        device_id: request.device_id,
        device_os: None,
        channel_id: None,
        scan_time: decided_at,
        decided_at,
        offline: false,
        shown: None,
        annuls: Some(request.scan_id.clone()),
        annulled: publication.passage,
    }
}

/// What an annulment's decision event says beside the request and decision.
#[derive(Debug, Clone)]
pub(crate) struct Publication {
    /// The annulled scan's ticket; empty when it is not to be named.
    token: Token,
    /// The annulling device's gate; empty when the device is not configured.
    gate_name: String,
    /// The passage taken back, for one carried out.
    passage: Option<AnnulledPassage>,
}

impl Publication {
    pub(crate) fn refused(token: Token, gate_name: String) -> Self {
        Self {
            token,
            gate_name,
            passage: None,
        }
    }
}
