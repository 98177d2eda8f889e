//! `iii worker remove <name>…`: stop, unregister and delete a worker's state.

use std::path::Path;

use argh::FromArgs;

use super::Ctx;
use crate::config::{edit, Config};
use crate::sandbox::WRITABLE_LAYER_DIR;
use crate::{err, Context, Error, Result};

#[derive(FromArgs, Debug)]
/// Stop workers if running, remove them from config.yaml and delete their state in .iii/.
/// Cached image layers stay in the store.
#[argh(subcommand, name = "remove")]
pub struct Args {
    /// worker names
    #[argh(positional, greedy)]
    pub names: Vec<String>,
    /// keep the worker's writable layer in .iii/workers/<name>/
    #[argh(switch)]
    pub keep_data: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    if args.names.is_empty() {
        return Err(Error::new("worker remove needs at least one worker name").with_exit_code(2));
    }
    let mut failures = 0;
    for name in &args.names {
        match remove_one(ctx, name, args.keep_data) {
            // Like `docker rm`: each removed name on stdout, for scripts.
            Ok(()) => {
                if let Err(e) = crate::stdio::out(&format!("{name}\n")) {
                    super::report(&e);
                    failures += 1;
                }
            }
            Err(e) => {
                super::report(&e);
                failures += 1;
            }
        }
    }
    Ok(if failures == 0 { 0 } else { 1 })
}

fn remove_one(ctx: &Ctx, name: &str, keep_data: bool) -> Result<()> {
    let path = &ctx.project.config_path;
    // Lenient: an entry that does not validate can still be removed (and must not stop the
    // others from being removed).
    let config = Config::load_lenient(path)?;
    if config.worker(name).is_none() {
        if config
            .invalid
            .iter()
            .any(|e| e.name.as_deref() == Some(name))
        {
            // It never validated, so it never ran; and its name may not be a safe path
            // (`../../x`): only its lines in config.yaml go.
            return edit::update_file(path, |text, current| {
                Ok((edit::remove_entry(text, current, name)?, ()))
            });
        }
        return Err(err!("no worker named {name:?} in {}", path.display()));
    }
    crate::supervisor::stop_for_removal(&ctx.project, name)?;
    edit::update_file(path, |text, current| {
        Ok((edit::remove_entry(text, current, name)?, ()))
    })?;
    delete_state(&ctx.project.worker_dir(name), keep_data)
}

/// Delete `.iii/workers/<name>/`, or everything in it but the writable layer.
fn delete_state(dir: &Path, keep_data: bool) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err!("reading {}: {e}", dir.display())),
    };
    if !keep_data {
        return std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()));
    }
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if entry.file_name() == WRITABLE_LAYER_DIR {
            continue;
        }
        let p = entry.path();
        let r = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}
