//! The README's walk-through, run as written: every `sh` block marked
//! `<!-- walk-through: … -->` is taken from README.md and run, in order, in
//! one bash (`set -euo pipefail`) against the real binary started as the
//! Quick start says (embedded default, dev secret in `./data`), so the
//! README cannot drift from what the service does.

use std::path::Path;
use std::process::{Command, Stdio};

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_matchmaking-api");
const MARKER: &str = "<!-- walk-through:";

/// The marked blocks of `readme`, in order.
fn walk_through(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if !line.starts_with(MARKER) {
            continue;
        }
        assert_eq!(lines.next(), Some("```sh"), "a marked block is a sh fence");
        let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        blocks.push(block.join("\n"));
    }
    blocks
}

/// The `"status"` and `"code"` values of the answers a block shows (its
/// `# {…}` comment lines), in order.
fn shown_states(block: &str) -> Vec<String> {
    block
        .lines()
        .filter(|l| l.starts_with("# {") || l.starts_with("#  "))
        .flat_map(|l| {
            let mut found = Vec::new();
            for key in ["\"status\":\"", "\"code\":\""] {
                for (at, _) in l.match_indices(key) {
                    let rest = &l[at + key.len()..];
                    if let Some(end) = rest.find('"') {
                        found.push((at, rest[..end].to_owned()));
                    }
                }
            }
            found.sort();
            found.into_iter().map(|(_, v)| v)
        })
        .collect()
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_readme_walk_through_runs_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let blocks = walk_through(&readme);
    assert!(
        blocks.len() >= 2,
        "the walk-through's blocks (queue, challenge) are marked"
    );
    for tool in ["curl", "jq"] {
        if !have(tool) {
            support::unreachable(tool, "not on PATH (apt-get install curl jq)");
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LOG_FORMAT", "json")
        .current_dir(dir.path())
        .args(["serve", "--bind-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let api = support::listening_url(&mut server);
    let script = format!("set -euo pipefail\n{}\n", blocks.join("\n"));
    // `timeout`: the block polls until a match, so a broken server must
    // fail the test, not hang it.
    let out = Command::new("timeout")
        .args(["120", "bash", "-c"])
        .arg(&script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // The block's own defaults name localhost:8080 and the release
        // binary; a test points them at its server and build.
        .env("API", &api)
        .env("MM", BIN)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the walk-through failed\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every answer the README shows came, in that order, with that status
    // or error code.
    let expected: Vec<String> = blocks.iter().flat_map(|b| shown_states(b)).collect();
    let got: Vec<String> = shown_states(
        &stdout
            .lines()
            .map(|l| format!("# {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert!(
        expected.len() >= 8,
        "the README shows its answers: {expected:?}"
    );
    assert_eq!(got, expected, "answers as run vs as shown\n{stdout}");
}

#[test]
fn shown_states_are_read_in_order() {
    let block = "curl …\n# {\"status\":\"PENDING\",\"x\":{\"status\":\"A\"}}\n#  \"code\":\"E\"\necho \"status\":\"no\"";
    assert_eq!(shown_states(block), ["PENDING", "A", "E"]);
}
