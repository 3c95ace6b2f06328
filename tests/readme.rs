//! The README's curl examples, run as written by bash and curl against the real
//! `analytics-service` (the test's port in place of 1000), each answer compared
//! with the `# …` line written under its command: the integration guide's
//! sequence on a fresh database, then the API section's.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BINARY: &str = env!("CARGO_BIN_EXE_analytics-service");
const README: &str = include_str!("../README.md");

/// A command of a README `sh` block, and the answer written under it.
#[derive(Debug)]
struct Example {
    command: String,
    answer: Option<String>,
}

/// The examples of the `sh` blocks between the headings `from` and `to`.
fn examples(from: &str, to: &str) -> Vec<Example> {
    let start = README.find(from).unwrap_or_else(|| panic!("README has no {from:?}"));
    let end = start + README[start..].find(to).unwrap_or_else(|| panic!("README has no {to:?} after {from:?}"));
    let mut examples = Vec::new();
    for block in README[start..end].split("```sh\n").skip(1) {
        let block = &block[..block.find("```").expect("closed block")];
        let mut command: Vec<&str> = Vec::new();
        for line in block.lines().chain([""]) {
            if let Some(answer) = line.strip_prefix("# ") {
                examples.push(Example { command: command.join("\n"), answer: Some(answer.to_string()) });
                command.clear();
            } else if line.trim().is_empty() || line.starts_with("curl ") && !command.is_empty() {
                if !command.is_empty() {
                    examples.push(Example { command: command.join("\n"), answer: None });
                    command.clear();
                }
                if !line.trim().is_empty() {
                    command.push(line);
                }
            } else {
                command.push(line);
            }
        }
    }
    examples
}

/// Runs `example` against the service on `port` from `dir`; returns its output.
fn run(example: &Example, port: u16, dir: &Path) -> String {
    let command = example.command.replace("localhost:1000", &format!("127.0.0.1:{port}"));
    let output = Command::new("bash").arg("-c").arg(&command).current_dir(dir).output().expect("bash runs");
    assert!(output.status.success(), "{command}\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// Runs `example` and checks its answer. A reading example is retried while the
/// worker catches up; a sending one runs once (a retry would send it again).
async fn check(example: &Example, port: u16, dir: &Path) {
    let Some(expected) = &example.answer else {
        run(example, port, dir);
        return;
    };
    let reads = !example.command.contains("-X POST");
    let mut last = String::new();
    let matched = common::eventually(Duration::from_secs(if reads { 10 } else { 0 }), || {
        last = run(example, port, dir);
        let matched = &last == expected;
        async move { matched }
    })
    .await;
    assert!(matched, "README example:\n{}\nanswered {last}\ninstead of {expected}", example.command);
}

/// `analytics-service all` on a fresh database; killed when dropped.
struct Service {
    port: u16,
    child: Child,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_service(dir: &Path) -> Service {
    let port = common::free_port();
    let child = Command::new(BINARY)
        .arg("all")
        .current_dir(dir)
        .env_remove("API_TOKEN")
        .env_remove("ALLOWED_SITES")
        .env("PORT", port.to_string())
        .env("MONGO_URL", common::fresh_database_url())
        .env("POLL_MS", "20")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let service = Service { port, child };
    let http = reqwest::Client::new();
    let up = common::eventually(Duration::from_secs(30), || async {
        let health = http.get(format!("http://127.0.0.1:{port}/health")).send().await;
        health.is_ok_and(|response| response.status() == 200)
    });
    assert!(up.await, "the service answers /health");
    service
}

#[tokio::test]
async fn the_readme_examples_answer_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let guide = start_service(dir.path()).await;

    let guide_examples = examples("## Integration guide", "## API\n");
    assert!(guide_examples.len() >= 8, "{guide_examples:#?}");
    for example in &guide_examples {
        check(example, guide.port, dir.path()).await;
    }
    // `curl -OJ` saved the export under its own name: the table the README shows.
    let saved = std::fs::read_to_string(dir.path().join("site-001-stats.csv")).expect("the export was saved");
    let shown = README.split("```csv\n").nth(1).and_then(|block| block.split("```").next()).expect("a csv block");
    assert_eq!(saved, shown);

    // The API section reads the guide's events, and sends its own elsewhere.
    let elsewhere = start_service(dir.path()).await;
    let api_examples = examples("## API\n", "## Configuration");
    assert!(api_examples.len() >= 9, "{api_examples:#?}");
    for example in &api_examples {
        let port = if example.command.contains("-X POST") { elsewhere.port } else { guide.port };
        check(example, port, dir.path()).await;
    }
}
