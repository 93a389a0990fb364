//! An answered write survives `kill -9`: a child process commits as fast as it can
//! and reports each answered commit; the parent kills it mid-stream, reopens the
//! file and finds every reported commit.

use presence_domain::{
    Decision, DeviceId, GateId, RememberedDecision, ScanId, ScanKey, ScanKind, StateRecord, Status,
    Token, TokenState,
};
use presence_ports::{Commit, CommitOutcome, TicketStore};
use presence_store_embedded::{EmbeddedOptions, EmbeddedStore};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

const DIR_VARIABLE: &str = "PRESENCE_STORE_CRASH_DIR";
const ANSWERED: &str = "answered ";

fn key(token: &str) -> ScanKey {
    ScanKey {
        kind: ScanKind::Enter,
        device_id: DeviceId::new(1),
        token: Token::new(token),
        scan_time: 1_480_003_200_000,
    }
}

fn entry(token: &str) -> Commit {
    Commit {
        key: key(token),
        expected_version: 0,
        next_state: Some(StateRecord {
            state: TokenState::In,
            last_entry: None,
            version: 1,
        }),
        remembered: RememberedDecision {
            scan_id: ScanId::new(token),
            decision: Decision::new(Status::Okay, "Okay", Vec::new()),
            decided_at: 1_480_003_200_000,
        },
        history: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the crashing child of answered_commits_survive_kill_9, which runs it"]
async fn crash_child() {
    let dir = std::env::var_os(DIR_VARIABLE).expect("run by answered_commits_survive_kill_9");
    let store = EmbeddedStore::open(dir.as_ref(), EmbeddedOptions::default()).unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..8 {
        let store: Arc<EmbeddedStore> = store.clone();
        writers.spawn(async move {
            for i in 0.. {
                let token = format!("w{writer}-{i}");
                let outcome = store.commit(entry(&token)).await.unwrap();
                assert_eq!(outcome, CommitOutcome::Committed);
                let mut out = std::io::stdout().lock();
                writeln!(out, "{ANSWERED}{token}").unwrap();
                out.flush().unwrap();
            }
        });
    }
    writers.join_next().await;
}

#[tokio::test]
async fn answered_commits_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--ignored", "--nocapture"])
        .env(DIR_VARIABLE, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut answered = Vec::new();
    for line in BufReader::new(stdout).lines() {
        if let Some(token) = line.unwrap().strip_prefix(ANSWERED) {
            answered.push(token.to_owned());
            if answered.len() == 300 {
                break;
            }
        }
    }
    // SIGKILL: no destructor, no flush, no clean close of the database.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(answered.len(), 300, "the child stopped answering early");

    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    for token in &answered {
        let read = store
            .scan_context(&key(token), GateId::new(1))
            .await
            .unwrap();
        assert_eq!(read.state.version, 1, "{token} was answered but lost");
        assert!(read.remembered.is_some(), "{token} was answered but lost");
    }
}
