//! External scorers: a program that reads candidates and prints scores.
//!
//! The program runs with `sh -c PROGRAM` (so it is written as in a shell: `python3
//! score.py --strict`). It gets one JSON line per candidate on stdin,
//! `{"index": i, "prompt": "...", "text": "...", "reference": "..."}`, stdin is then
//! closed, and it prints one number per line on stdout, in the same order. Trailing
//! blank lines are ignored.
//!
//! Nothing it does is fatal: a program that cannot start, crashes, exits with a non-zero
//! status, runs past its timeout (it is killed, with its process group), or prints more
//! lines than candidates masks every candidate; too few lines mask the candidates
//! without one; a line that is not a finite number masks its candidate. Each problem is
//! described in [`CommandOutcome::report`] (with an excerpt of stderr).
//!
//! ```
//! use latentevo_reward::command::{run_scorer, ScorerInput};
//! use std::time::Duration;
//! let inputs = [
//!     ScorerInput { index: 0, prompt: "p", text: "a", reference: "r" },
//!     ScorerInput { index: 1, prompt: "p", text: "bb", reference: "r" },
//! ];
//! let out = run_scorer("cat >/dev/null; echo 1; echo 2.5", &inputs, Duration::from_secs(10));
//! assert_eq!(out.scores[0].as_ref().ok(), Some(&1.0));
//! assert_eq!(out.scores[1].as_ref().ok(), Some(&2.5));
//! assert!(out.report.is_none());
//! ```

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

/// One candidate as the scorer sees it.
#[derive(Debug, Clone, Copy)]
pub struct ScorerInput<'a> {
    /// The candidate's index in the batch.
    pub index: usize,
    /// The prompt.
    pub prompt: &'a str,
    /// The candidate's text.
    pub text: &'a str,
    /// The reference answer (empty when there is none).
    pub reference: &'a str,
}

/// What a scorer run gave.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome {
    /// Per candidate, in input order: the score, or why there is none.
    pub scores: Vec<Result<f64, String>>,
    /// A one-line description of the problems, if any (e.g. "command `x` exited with
    /// status 1: STDERR; 16 candidates masked").
    pub report: Option<String>,
}

/// The most stderr quoted in a report.
const STDERR_EXCERPT: usize = 300;

fn excerpt(stderr: &[u8]) -> String {
    let s = String::from_utf8_lossy(stderr);
    let s = s.trim();
    let mut out: String = s.chars().take(STDERR_EXCERPT).collect();
    if s.chars().count() > STDERR_EXCERPT {
        out.push_str("...");
    }
    out.replace('\n', " | ")
}

/// Runs `program` with `sh -c` on `inputs` (see the module docs); never panics, never
/// fails: problems become masked candidates and a report.
pub fn run_scorer(program: &str, inputs: &[ScorerInput<'_>], timeout: Duration) -> CommandOutcome {
    let n = inputs.len();
    let all = |why: String, report: String| CommandOutcome {
        scores: vec![Err(why); n],
        report: Some(format!("{report}; {n} candidates masked")),
    };
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return all(
                format!("command `{program}` could not start"),
                format!("command `{program}` could not start: {e}"),
            )
        }
    };
    let mut payload = String::new();
    for inp in inputs {
        let line = json!({
            "index": inp.index,
            "prompt": inp.prompt,
            "text": inp.text,
            "reference": inp.reference,
        });
        payload.push_str(&line.to_string());
        payload.push('\n');
    }
    // Writer and readers on their own threads, so that a program that does not read its
    // input, or fills its output pipes, cannot block us past the timeout.
    let stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(mut s) = stdin {
            // A program may exit without reading its input (a broken pipe): not our error.
            let _ = s.write_all(payload.as_bytes());
        }
    });
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_reader = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err_reader = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    if status.is_none() {
        kill_group(&mut child);
        let _ = child.wait();
    }
    let _ = writer.join();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let Some(status) = status else {
        return all(
            format!("command `{program}` timed out"),
            format!(
                "command `{program}` timed out after {:.1} s and was killed",
                timeout.as_secs_f64()
            ),
        );
    };
    if !status.success() {
        let how = match status.code() {
            Some(c) => format!("exited with status {c}"),
            None => "was killed by a signal".to_string(),
        };
        let err = excerpt(&stderr);
        return all(
            format!("command `{program}` {how}"),
            if err.is_empty() {
                format!("command `{program}` {how}")
            } else {
                format!("command `{program}` {how}: {err}")
            },
        );
    }
    let text = String::from_utf8_lossy(&stdout);
    let mut lines: Vec<&str> = text.lines().collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    if lines.len() > n {
        return all(
            format!("command `{program}` printed too many lines"),
            format!(
                "command `{program}` printed {} lines for {n} candidates (one number per line expected)",
                lines.len()
            ),
        );
    }
    let mut scores = Vec::with_capacity(n);
    let mut problems = Vec::new();
    for i in 0..n {
        match lines.get(i) {
            None => scores.push(Err(format!("command `{program}` printed no line for it"))),
            Some(l) => match l.trim().parse::<f64>() {
                Ok(x) if x.is_finite() => scores.push(Ok(x)),
                _ => {
                    let shown: String = l.trim().chars().take(40).collect();
                    if problems.len() < 3 {
                        problems.push(format!("line {} is `{shown}`, not a finite number", i + 1));
                    }
                    scores.push(Err(format!(
                        "command `{program}` printed `{shown}`, not a finite number"
                    )));
                }
            },
        }
    }
    let masked = scores.iter().filter(|s| s.is_err()).count();
    let report = (masked > 0).then(|| {
        let mut what = Vec::new();
        if lines.len() < n {
            what.push(format!("printed {} lines for {n} candidates", lines.len()));
        }
        what.extend(problems);
        format!(
            "command `{program}` {}; {masked} candidate{} masked",
            what.join(", "),
            if masked == 1 { "" } else { "s" }
        )
    });
    CommandOutcome { scores, report }
}

/// Kills the child and, on unix, its whole process group (the shell's children too).
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    {
        // The shell's `kill -KILL -PGID`: no unsafe code needed.
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -KILL -{} 2>/dev/null", child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.kill();
}
