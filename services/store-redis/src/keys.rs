//! Key names. The layout is described in the crate documentation; this module is
//! the only place that builds a key.
//!
//! Every family starts with its own fixed tag and ends with the id, so no key of
//! one family can equal a key of another whatever the ids contain. A token sits
//! inside its hash tag instead, followed by a suffix without `}`: the last `}` of
//! the key is then the one closing the token, so token keys cannot collide either.

use presence_domain::{DeviceId, EventId, GateId, ScanId, ScanKey, Token, UnixMillis, VenueId};

/// The inventory kinds counted for [`presence_ports::InventoryStore::size`], each
/// in a HyperLogLog of its ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    Venues,
    Events,
    Tickets,
}

/// The sequences ids are drawn from (`INCR`), so every id is positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sequence {
    Gate,
    Device,
}

#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// `prefix` must not contain `{` or `}`: a brace in it would move every key's
    /// hash tag (checked when the store connects).
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix, then `pieces`, in a string allocated once at its length.
    /// `format!` sizes its string by the literal pieces alone and grows it
    /// again for each argument: with a dozen keys a scan, that was a tenth of
    /// the validator's instructions (docs/benchmarks.md, "Instructions per scan").
    fn key(&self, pieces: &[&str]) -> String {
        let length = self.prefix.len() + pieces.iter().map(|piece| piece.len()).sum::<usize>();
        let mut key = String::with_capacity(length);
        key.push_str(&self.prefix);
        for piece in pieces {
            key.push_str(piece);
        }
        key
    }

    fn token_key(&self, token: &Token, suffix: &str) -> String {
        self.key(&["{t:", token.as_str(), "}:", suffix])
    }

    pub(crate) fn ticket(&self, token: &Token) -> String {
        self.token_key(token, "tk")
    }

    pub(crate) fn state(&self, token: &Token) -> String {
        self.token_key(token, "st")
    }

    /// List of the token's [`presence_domain::ScanRecord`]s (JSON), newest first.
    pub(crate) fn history(&self, token: &Token) -> String {
        self.token_key(token, "h")
    }

    /// The decision remembered for one scan. The token is already in the hash tag,
    /// so the suffix holds the rest of the scan key only.
    pub(crate) fn decision(&self, key: &ScanKey) -> String {
        let mut device = itoa::Buffer::new();
        let mut scan_time = itoa::Buffer::new();
        self.key(&[
            "{t:",
            key.token.as_str(),
            "}:sc:",
            key.kind.as_str(),
            ":",
            device.format(key.device_id.get()),
            ":",
            scan_time.format(key.scan_time),
        ])
    }

    /// The token whose history holds this scan's record. The scan id is the
    /// whole hash tag: a scan id (letters, digits, `-`) holds no brace.
    pub(crate) fn scan_token(&self, scan_id: &ScanId) -> String {
        self.key(&["{s:", scan_id.as_str(), "}"])
    }

    pub(crate) fn venue(&self, id: &VenueId) -> String {
        self.key(&["vn:", id.as_str()])
    }

    pub(crate) fn event(&self, id: &EventId) -> String {
        self.key(&["ev:", id.as_str()])
    }

    pub(crate) fn gate(&self, id: GateId) -> String {
        self.key(&["gt:", itoa::Buffer::new().format(id.get())])
    }

    /// Hash of the venue's gates: gate key (NFKC, trimmed, lower-case name) → gate id.
    pub(crate) fn gate_names(&self, venue_id: &VenueId) -> String {
        self.key(&["vg:", venue_id.as_str()])
    }

    pub(crate) fn device(&self, id: DeviceId) -> String {
        self.key(&["dv:", itoa::Buffer::new().format(id.get())])
    }

    /// Hash of the venue's devices: MAC → device id.
    pub(crate) fn device_macs(&self, venue_id: &VenueId) -> String {
        self.key(&["vm:", venue_id.as_str()])
    }

    /// A venue's stats keys share the hash tag `{vs:<venue>}`, so the script
    /// that counts a decision touches one slot.
    /// `{vs:<venue>}:<suffix><id>`.
    fn venue_stats_key(&self, venue_id: &VenueId, suffix: &str, id: &str) -> String {
        self.key(&["{vs:", venue_id.as_str(), "}:", suffix, id])
    }

    /// Hash of the venue's counters: `scope|counter` field → count.
    pub(crate) fn stats_counters(&self, venue_id: &VenueId) -> String {
        self.venue_stats_key(venue_id, "c", "")
    }

    /// Hash: gate id → the name its scanners last sent.
    pub(crate) fn stats_gate_names(&self, venue_id: &VenueId) -> String {
        self.venue_stats_key(venue_id, "g", "")
    }

    /// When the venue's latest counted decision was made.
    pub(crate) fn stats_updated(&self, venue_id: &VenueId) -> String {
        self.venue_stats_key(venue_id, "u", "")
    }

    /// Hash of one minute's entries: gate id → people admitted; expires when
    /// the board no longer shows the minute.
    pub(crate) fn stats_minute(&self, venue_id: &VenueId, minute: UnixMillis) -> String {
        self.venue_stats_key(venue_id, "m:", itoa::Buffer::new().format(minute))
    }

    /// Hash: device id → `<latest counted decision time>:<gate id>`.
    pub(crate) fn stats_devices(&self, venue_id: &VenueId) -> String {
        self.venue_stats_key(venue_id, "d", "")
    }

    /// Present (with a TTL) once this scan's decision was counted.
    pub(crate) fn stats_seen(&self, venue_id: &VenueId, scan_id: &ScanId) -> String {
        self.venue_stats_key(venue_id, "sn:", scan_id.as_str())
    }

    pub(crate) fn inventory_size(&self, counted: Counted) -> String {
        let name = match counted {
            Counted::Venues => "venues",
            Counted::Events => "events",
            Counted::Tickets => "tickets",
        };
        self.key(&["inv:", name])
    }

    pub(crate) fn sequence(&self, sequence: Sequence) -> String {
        let name = match sequence {
            Sequence::Gate => "gate",
            Sequence::Device => "device",
        };
        self.key(&["seq:", name])
    }
}

/// The hash tag Redis Cluster would route `key` by (the whole key if it has none).
#[cfg(test)]
pub(crate) fn hash_tag(key: &str) -> &str {
    let Some(open) = key.find('{') else {
        return key;
    };
    match key[open + 1..].find('}') {
        Some(0) | None => key,
        Some(len) => &key[open + 1..open + 1 + len],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_domain::ScanKind;

    fn scan(token: &str) -> ScanKey {
        ScanKey {
            kind: ScanKind::Enter,
            device_id: DeviceId::new(224),
            token: Token::new(token),
            scan_time: 1_480_003_200_001,
        }
    }

    #[test]
    fn a_scan_touches_one_slot_whatever_the_token_holds() {
        let keys = Keys::new("presence:");
        for token in ["721744537954", "a}b", "{x}", "}", "t:{", "sp ace\n"] {
            let token_ = Token::new(token);
            let tags = [
                hash_tag(&keys.ticket(&token_)).to_owned(),
                hash_tag(&keys.state(&token_)).to_owned(),
                hash_tag(&keys.decision(&scan(token))).to_owned(),
            ];
            assert!(
                tags.iter().all(|tag| *tag == tags[0]),
                "{token:?}: {tags:?}"
            );
        }
    }

    #[test]
    fn a_tally_touches_one_slot_whatever_the_venue_holds() {
        let keys = Keys::new("presence:");
        for venue in ["KovZpZAnAtJJ", "a}b", "{x}", "}"] {
            let venue = VenueId::new(venue);
            let tags = [
                keys.stats_seen(&venue, &ScanId::new("s}1")),
                keys.stats_counters(&venue),
                keys.stats_gate_names(&venue),
                keys.stats_updated(&venue),
            ]
            .map(|key| hash_tag(&key).to_owned());
            assert!(
                tags.iter().all(|tag| *tag == tags[0]),
                "{venue:?}: {tags:?}"
            );
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let keys = Keys::new("presence:");
        let token = Token::new("721744537954");
        assert_eq!(keys.ticket(&token), "presence:{t:721744537954}:tk");
        assert_eq!(keys.state(&token), "presence:{t:721744537954}:st");
        assert_eq!(
            keys.decision(&scan("721744537954")),
            "presence:{t:721744537954}:sc:enter:224:1480003200001"
        );
        assert_eq!(
            keys.scan_token(&ScanId::new("0190-ab")),
            "presence:{s:0190-ab}"
        );
        assert_eq!(keys.gate(GateId::new(7)), "presence:gt:7");
        assert_eq!(keys.gate_names(&VenueId::new("V")), "presence:vg:V");
        assert_eq!(keys.device_macs(&VenueId::new("V")), "presence:vm:V");
        assert_eq!(keys.sequence(Sequence::Device), "presence:seq:device");
        assert_eq!(keys.history(&token), "presence:{t:721744537954}:h");
        assert_eq!(keys.venue(&VenueId::new("V")), "presence:vn:V");
        assert_eq!(keys.event(&EventId::new("E")), "presence:ev:E");
        assert_eq!(keys.device(DeviceId::new(224)), "presence:dv:224");
        assert_eq!(
            keys.inventory_size(Counted::Tickets),
            "presence:inv:tickets"
        );
        let venue = VenueId::new("V");
        assert_eq!(keys.stats_counters(&venue), "presence:{vs:V}:c");
        assert_eq!(keys.stats_gate_names(&venue), "presence:{vs:V}:g");
        assert_eq!(keys.stats_updated(&venue), "presence:{vs:V}:u");
        assert_eq!(keys.stats_devices(&venue), "presence:{vs:V}:d");
        assert_eq!(
            keys.stats_minute(&venue, 1_480_003_200_000),
            "presence:{vs:V}:m:1480003200000"
        );
        assert_eq!(
            keys.stats_seen(&venue, &ScanId::new("0190-ab")),
            "presence:{vs:V}:sn:0190-ab"
        );
    }

    #[test]
    fn tokens_that_look_like_suffixes_do_not_collide() {
        let keys = Keys::new("p:");
        let plain = Token::new("a");
        let tricky = Token::new("a}:tk");
        let all = [
            keys.ticket(&plain),
            keys.state(&plain),
            keys.ticket(&tricky),
            keys.state(&tricky),
            keys.decision(&scan("a")),
            keys.decision(&scan("a}:st")),
        ];
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "{all:?}");
    }
}
