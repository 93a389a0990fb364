//! The public paths, in one place, so the router, authentication and the OpenAPI
//! document agree on them.

/// Everything under these prefixes needs an API key and answers with envelopes.
pub(crate) const PRESENCE_PREFIX: &str = "/presence/";
pub(crate) const ADMIN_PREFIX: &str = "/admin/";

pub(crate) const TICKET_ENTER: &str = "/presence/v1/ticket/enter";
pub(crate) const TICKET_EXIT: &str = "/presence/v1/ticket/exit";
pub(crate) const TICKET_VALIDATE: &str = "/presence/v1/ticket/validate";
pub(crate) const TICKET_OFFLINE: &str = "/presence/v1/ticket/offline";
pub(crate) const TICKET_ANNUL: &str = "/presence/v1/ticket/annul";
pub(crate) const TICKET: &str = "/presence/v1/ticket";
pub(crate) const DEVICE_INIT: &str = "/presence/v1/device/init";
pub(crate) const DEVICE: &str = "/presence/v1/device";
pub(crate) const VENUE_STATS: &str = "/presence/v1/venues/{venueId}/stats";
pub(crate) const VENUE_LIVE: &str = "/presence/v1/venues/{venueId}/live";
/// The venue board page and its assets: no key, they hold no data.
pub(crate) const VENUE_BOARD: &str = "/venues/{venueId}/board";
pub(crate) const BOARD_SCRIPT: &str = "/board/board.js";
pub(crate) const BOARD_STYLE: &str = "/board/board.css";
pub(crate) const INVENTORY: &str = "/admin/v1/inventory";
pub(crate) const BACKUP: &str = "/admin/v1/backup";
pub(crate) const DEVICE_REVOKE: &str = "/admin/v1/devices/revoke";
pub(crate) const HEALTHZ: &str = "/healthz";
pub(crate) const READYZ: &str = "/readyz";
pub(crate) const METRICS: &str = "/metrics";
pub(crate) const OPENAPI: &str = "/openapi.json";

/// Every path of the public API also answers with a `.json` suffix, and the device
/// lookup with a trailing slash (the seed's curl example uses it).
pub(crate) const ALIASES: [(&str, &str); 10] = [
    (TICKET_ENTER, "/presence/v1/ticket/enter.json"),
    (TICKET_EXIT, "/presence/v1/ticket/exit.json"),
    (TICKET_VALIDATE, "/presence/v1/ticket/validate.json"),
    (TICKET_OFFLINE, "/presence/v1/ticket/offline.json"),
    (TICKET_ANNUL, "/presence/v1/ticket/annul.json"),
    (TICKET, "/presence/v1/ticket.json"),
    (DEVICE_INIT, "/presence/v1/device/init.json"),
    (DEVICE, "/presence/v1/device.json"),
    (DEVICE, "/presence/v1/device/"),
    (VENUE_STATS, "/presence/v1/venues/{venueId}/stats.json"),
];

/// The path and every alias of it.
pub(crate) fn with_aliases(path: &'static str) -> impl Iterator<Item = &'static str> {
    std::iter::once(path).chain(
        ALIASES
            .iter()
            .filter(move |(canonical, _)| *canonical == path)
            .map(|(_, alias)| *alias),
    )
}

/// Anything under the API prefixes needs a key, known path or not, so that an
/// unauthenticated caller learns nothing about which paths exist.
pub(crate) fn requires_key(path: &str) -> bool {
    path.starts_with(PRESENCE_PREFIX) || path.starts_with(ADMIN_PREFIX)
}

/// Ticket endpoints (the scans and the annulment) always answer with
/// `message.tickets`, errors included, so a scanner app can read the list
/// without checking the status first.
pub(crate) fn is_ticket_path(path: &str) -> bool {
    [TICKET_ENTER, TICKET_EXIT, TICKET_VALIDATE, TICKET_ANNUL]
        .into_iter()
        .any(|ticket| with_aliases(ticket).any(|p| p == path))
}

/// Device calls answer every error with an empty `message` object, so a client
/// can read `message` whatever the status.
pub(crate) fn is_device_path(path: &str) -> bool {
    [DEVICE_INIT, DEVICE]
        .into_iter()
        .any(|device| with_aliases(device).any(|p| p == path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_include_the_path_itself() {
        let device: Vec<_> = with_aliases(DEVICE).collect();
        assert_eq!(
            device,
            [DEVICE, "/presence/v1/device.json", "/presence/v1/device/"]
        );
        assert_eq!(with_aliases(HEALTHZ).collect::<Vec<_>>(), [HEALTHZ]);
    }

    #[test]
    fn ticket_paths_and_key_paths() {
        assert!(is_ticket_path("/presence/v1/ticket/exit.json"));
        assert!(is_ticket_path("/presence/v1/ticket/annul.json"));
        assert!(!is_ticket_path(DEVICE_INIT));
        assert!(is_device_path("/presence/v1/device/"));
        assert!(is_device_path(DEVICE_INIT));
        assert!(!is_device_path(TICKET_ENTER));
        assert!(requires_key("/presence/v1/nothing-here"));
        assert!(requires_key(INVENTORY));
        assert!(!requires_key(READYZ));
    }
}
