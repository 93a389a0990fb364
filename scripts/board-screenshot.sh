#!/usr/bin/env bash
# Remakes docs/board.png, the README's picture of the venue board, with the
# browser test of the embedded mode (tests/tests/board.rs). The test itself
# writes its screenshots to a temporary directory, so CI never dirties the clone.
# With PRESENCE_BOARD_SCREENSHOT set, the test first admits a crowd of a few
# hundred at two gates and keeps the production silent threshold (2 minutes),
# so that the picture shows a venue at work and the warning's real wording: it
# takes about three minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${PRESENCE_BROWSER_DEPS:?set it to the directory scripts/test.sh installs playwright-core and axe-core into (~/.cache/presence-tools/browser)}"
cargo build --workspace --all-features --bins
PRESENCE_BOARD_SCREENSHOT="$PWD/docs/board.png" \
    cargo nextest run --workspace --all-features --no-capture \
    -E 'test(the_board_in_a_browser_embedded)'
echo "docs/board.png updated"
