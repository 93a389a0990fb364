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

    fn token_key(&self, token: &Token, suffix: &str) -> String {
        format!("{}{{t:{}}}:{suffix}", self.prefix, token.as_str())
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
        self.token_key(
            &key.token,
            &format!("sc:{}:{}:{}", key.kind, key.device_id, key.scan_time),
        )
    }

    /// The token whose history holds this scan's record. The scan id is the
    /// whole hash tag: a scan id (letters, digits, `-`) holds no brace.
    pub(crate) fn scan_token(&self, scan_id: &ScanId) -> String {
        format!("{}{{s:{scan_id}}}", self.prefix)
    }

    pub(crate) fn venue(&self, id: &VenueId) -> String {
        format!("{}vn:{id}", self.prefix)
    }

    pub(crate) fn event(&self, id: &EventId) -> String {
        format!("{}ev:{id}", self.prefix)
    }

    pub(crate) fn gate(&self, id: GateId) -> String {
        format!("{}gt:{id}", self.prefix)
    }

    /// Hash of the venue's gates: gate key (NFKC, trimmed, lower-case name) → gate id.
    pub(crate) fn gate_names(&self, venue_id: &VenueId) -> String {
        format!("{}vg:{venue_id}", self.prefix)
    }

    pub(crate) fn device(&self, id: DeviceId) -> String {
        format!("{}dv:{id}", self.prefix)
    }

    /// Hash of the venue's devices: MAC → device id.
    pub(crate) fn device_macs(&self, venue_id: &VenueId) -> String {
        format!("{}vm:{venue_id}", self.prefix)
    }

    /// A venue's stats keys share the hash tag `{vs:<venue>}`, so the script
    /// that counts a decision touches one slot.
    fn venue_stats_key(&self, venue_id: &VenueId, suffix: &str) -> String {
        format!("{}{{vs:{venue_id}}}:{suffix}", self.prefix)
    }

    /// Hash of the venue's counters: `scope|counter` field → count.
    pub(crate) fn stats_counters(&self, venue_id: &VenueId) -> String {
        self.venue_stats_key(venue_id, "c")
    }

    /// Hash: gate id → the name its scanners last sent.
    pub(crate) fn stats_gate_names(&self, venue_id: &VenueId) -> String {
        self.venue_stats_key(venue_id, "g")
    }

    /// When the venue's latest counted decision was made.
    pub(crate) fn stats_updated(&self, venue_id: &VenueId) -> String {
        self.venue_stats_key(venue_id, "u")
    }

    /// Hash of one minute's entries: gate id → people admitted; expires when
    /// the board no longer shows the minute.
    pub(crate) fn stats_minute(&self, venue_id: &VenueId, minute: UnixMillis) -> String {
        self.venue_stats_key(venue_id, &format!("m:{minute}"))
    }

    /// Hash: device id → `<latest counted decision time>:<gate id>`.
    pub(crate) fn stats_devices(&self, venue_id: &VenueId) -> String {
        self.venue_stats_key(venue_id, "d")
    }

    /// Present (with a TTL) once this scan's decision was counted.
    pub(crate) fn stats_seen(&self, venue_id: &VenueId, scan_id: &ScanId) -> String {
        self.venue_stats_key(venue_id, &format!("sn:{scan_id}"))
    }

    pub(crate) fn inventory_size(&self, counted: Counted) -> String {
        let name = match counted {
            Counted::Venues => "venues",
            Counted::Events => "events",
            Counted::Tickets => "tickets",
        };
        format!("{}inv:{name}", self.prefix)
    }

    pub(crate) fn sequence(&self, sequence: Sequence) -> String {
        let name = match sequence {
            Sequence::Gate => "gate",
            Sequence::Device => "device",
        };
        format!("{}seq:{name}", self.prefix)
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
