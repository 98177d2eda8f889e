//! `iii worker list`: every worker in config.yaml with its state.

use argh::FromArgs;

use super::Ctx;
use std::io::Write;

use crate::supervisor::lifecycle::{self, ListRow};
use crate::Context;

#[derive(FromArgs, Debug)]
/// List every worker in config.yaml: NAME, IMAGE, STATUS, SANDBOX, PID, UPTIME, RESTARTS,
/// SDK, FUNCTIONS.
#[argh(subcommand, name = "list")]
pub struct Args {
    /// print a JSON array on stdout instead of a table
    #[argh(switch)]
    pub json: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> crate::Result<i32> {
    let rows = lifecycle::list(&ctx.project)?;
    // The table has no room for why an entry is invalid: say it on stderr.
    if !args.json {
        for r in rows.iter().filter(|r| r.status == "invalid") {
            crate::say!("warning: {}", r.error.as_deref().unwrap_or("invalid entry"));
        }
    }
    let out = if args.json {
        let mut s = serde_json::to_string_pretty(&rows).context("encoding the worker list")?;
        s.push('\n');
        s
    } else {
        format_table(&rows)
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
        .context("writing to stdout")?;
    Ok(0)
}

/// `12s`, `5m`, `3h`, `2d`: coarse, like `docker ps`.
fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The table `list` prints.
fn format_table(rows: &[ListRow]) -> String {
    let header = [
        "NAME",
        "IMAGE",
        "STATUS",
        "SANDBOX",
        "PID",
        "UPTIME",
        "RESTARTS",
        "SDK",
        "FUNCTIONS",
    ];
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.image.clone(),
                r.status.clone(),
                r.sandbox.clone(),
                r.pid.map_or("-".into(), |p| p.to_string()),
                r.uptime_seconds.map_or("-".into(), human_duration),
                r.restarts.to_string(),
                match r.sdk_connected {
                    Some(true) => "connected".into(),
                    Some(false) => "waiting".into(),
                    None => "-".into(),
                },
                r.functions.map_or("-".into(), |n| n.to_string()),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.len());
        }
    }
    let mut out = String::new();
    let mut line = |cols: Vec<&str>| {
        let mut l = String::new();
        for (i, s) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                l.push_str(s);
            } else {
                l.push_str(&format!("{s:<w$}   ", w = width[i]));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for c in &cells {
        line(c.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            ListRow {
                name: "a".into(),
                image: "localhost:5000/busybox:1".into(),
                status: "running".into(),
                sandbox: "namespace".into(),
                sandbox_note: None,
                pid: Some(1234),
                uptime_seconds: Some(75),
                restarts: 2,
                sdk_connected: Some(true),
                functions: Some(3),
                exit_code: None,
                error: None,
            },
            ListRow {
                name: "longer-name".into(),
                image: "x".into(),
                status: "exited 1".into(),
                sandbox: "vm".into(),
                sandbox_note: None,
                pid: None,
                uptime_seconds: None,
                restarts: 0,
                sdk_connected: None,
                functions: None,
                exit_code: Some(1),
                error: None,
            },
        ];
        let t = format_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("STATUS").unwrap();
        assert_eq!(&lines[1][col..col + 7], "running");
        assert_eq!(&lines[2][col..col + 8], "exited 1");
        assert!(
            lines[1].contains(" 1234 ")
                && lines[1].contains(" 1m ")
                && lines[1].contains(" 2 ")
                && lines[1].contains(" connected ")
                && lines[1].ends_with('3'),
            "{t}"
        );
        assert!(lines[2].contains(" - "));
        let json = serde_json::to_value(&rows).unwrap();
        assert_eq!(json[0]["pid"], 1234);
        assert_eq!(json[1]["status"], "exited 1");
        assert_eq!(json[0]["sdk_connected"], true);
        assert_eq!(json[0]["functions"], 3);
        assert!(json[1]["sdk_connected"].is_null());
        assert!(json[1]["pid"].is_null());
    }

    #[test]
    fn durations_are_coarse() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(7200), "2h");
        assert_eq!(human_duration(200_000), "2d");
    }
}
