//! `iii trigger FUNCTION_ID [KEY=VALUE…]`: call a function through the running engine.

use std::io::Write;
use std::time::Duration;

use argh::FromArgs;
use serde_json::{Map, Value};

use super::Ctx;
use crate::config::Config;
use crate::engine::client::{self, Outcome};
use crate::engine::wire;
use crate::supervisor::control::{self, Request};
use crate::{err, Context};

#[derive(FromArgs, Debug)]
/// Call a function served through the engine and print its result as JSON. KEY=VALUE pairs
/// build the payload (a VALUE that is valid JSON is used as JSON, else as a string).
#[argh(subcommand, name = "trigger")]
pub struct Args {
    /// the function to call, e.g. math::add
    #[argh(positional)]
    pub function_id: String,
    /// payload fields, KEY=VALUE
    #[argh(positional)]
    pub fields: Vec<String>,
    /// the whole payload as JSON (KEY=VALUE pairs are added to it)
    #[argh(option)]
    pub json: Option<String>,
    /// how long to wait for the answer, in milliseconds (default 30000)
    #[argh(option, default = "30_000")]
    pub timeout_ms: u64,
    /// engine host (default: this project's engine, else localhost)
    #[argh(option)]
    pub address: Option<String>,
    /// engine worker port (default: this project's, else 49134)
    #[argh(option)]
    pub port: Option<u16>,
}

/// The payload: `--json` (if any) with every KEY=VALUE on top.
fn payload(args: &Args) -> crate::Result<Option<Value>> {
    let mut base = match &args.json {
        None => None,
        Some(j) => {
            Some(serde_json::from_str::<Value>(j).map_err(|e| err!("--json is not JSON: {e}"))?)
        }
    };
    if args.fields.is_empty() {
        return Ok(base);
    }
    let obj: &mut Map<String, Value> = match base.get_or_insert_with(|| Value::Object(Map::new())) {
        Value::Object(m) => m,
        _ => {
            return Err(err!(
                "--json must be an object to add KEY=VALUE fields to it"
            ))
        }
    };
    for f in &args.fields {
        let (k, v) = f
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| err!("{f:?}: payload fields are KEY=VALUE").with_exit_code(2))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        obj.insert(k.to_string(), value);
    }
    Ok(base)
}

/// Where the engine is: the flags, else this project's worker port, else localhost:49134.
fn address(ctx: &Ctx, args: &Args) -> crate::Result<(String, u16)> {
    if args.address.is_some() || args.port.is_some() {
        return Ok((
            args.address.clone().unwrap_or_else(|| "localhost".into()),
            args.port.unwrap_or(crate::config::DEFAULT_WORKER_PORT),
        ));
    }
    let config = Config::load(&ctx.project.config_path)?;
    let host = match config.worker_host()?.as_str() {
        "0.0.0.0" | "::" | "[::]" => "127.0.0.1".to_string(),
        h => h.to_string(),
    };
    let port = config.worker_port()?;
    if port != 0 {
        return Ok((host, port));
    }
    // `port: 0`: the kernel chose one; the running engine knows which.
    let status = control::call(&ctx.project.engine_socket(), &Request::Status)?;
    match status.and_then(|r| r.port) {
        Some(p) => Ok((host, p)),
        None => Err(err!(
            "no iii engine is running for {} (its worker port is 0: chosen at start); start one with `iii`",
            ctx.project.config_path.display()
        )),
    }
}

pub fn run(ctx: &Ctx, args: Args) -> crate::Result<i32> {
    let data = payload(&args)?;
    let (host, port) = address(ctx, &args)?;
    let data = data.map(|v| wire::to_json(&v));
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    match client::call(&host, port, &args.function_id, data, timeout)? {
        Outcome::Result(r) => {
            let value: Value = r
                .as_ref()
                .and_then(|j| serde_json::from_str(j.get()).ok())
                .unwrap_or(Value::Null);
            let mut text = serde_json::to_string_pretty(&value).context("encoding the result")?;
            text.push('\n');
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|_| out.flush())
                .context("writing to stdout")?;
            Ok(0)
        }
        Outcome::Failed(e) => Err(err!("{}: {}", e.code, e.message)),
    }
}
