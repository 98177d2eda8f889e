//! Pull progress: what a pull reports per layer, a terminal bar renderer (stderr is a tty)
//! and a plain one-line-per-layer renderer (logs, CI, pipes).

use std::io::Write;
use std::time::{Duration, Instant};

use super::digest::Digest;

/// How a layer was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerOutcome {
    /// Downloaded (and verified) now.
    Downloaded,
    /// Already in the store: no network.
    Cached,
}

/// Receives pull events. Layer events come from several download threads (hence `Send`),
/// serialised by the caller: never two calls at once.
pub trait Progress: Send {
    /// The image resolved to manifest `digest` with `layers` layers.
    fn resolved(&mut self, _image: &str, _digest: &Digest, _layers: usize) {}
    /// Layer `index` (0-based, bottom first) starts: `size` bytes compressed.
    fn layer_start(&mut self, index: usize, digest: &Digest, size: u64);
    /// Layer `index` has `done` of its bytes.
    fn layer_advance(&mut self, index: usize, done: u64);
    /// Layer `index` is downloaded and verified, or was already present.
    fn layer_done(&mut self, index: usize, outcome: LayerOutcome);
    /// Something the user should know about the pull (a damaged blob replaced), one line.
    fn notice(&mut self, _message: &str) {}
}

/// Discards everything (library callers, tests).
pub struct NoProgress;

impl Progress for NoProgress {
    fn layer_start(&mut self, _: usize, _: &Digest, _: u64) {}
    fn layer_advance(&mut self, _: usize, _: u64) {}
    fn layer_done(&mut self, _: usize, _: LayerOutcome) {}
}

/// The renderer that suits stderr: bars on a terminal, lines otherwise.
pub fn for_stderr() -> Box<dyn Progress> {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        Box::new(BarProgress::new(std::io::stderr()))
    } else {
        Box::new(PlainProgress::new(std::io::stderr()))
    }
}

struct LayerState {
    short: String,
    size: u64,
    done: u64,
    outcome: Option<LayerOutcome>,
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// One line per finished layer: `layer 2/3 sha256:0123456789ab 1.2 MiB downloaded`.
pub struct PlainProgress<W: Write + Send> {
    out: W,
    total: usize,
    layers: Vec<Option<LayerState>>,
}

impl<W: Write + Send> PlainProgress<W> {
    pub fn new(out: W) -> Self {
        PlainProgress {
            out,
            total: 0,
            layers: Vec::new(),
        }
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

fn slot(layers: &mut Vec<Option<LayerState>>, index: usize) -> &mut Option<LayerState> {
    if layers.len() <= index {
        layers.resize_with(index + 1, || None);
    }
    &mut layers[index]
}

impl<W: Write + Send> Progress for PlainProgress<W> {
    fn resolved(&mut self, image: &str, digest: &Digest, layers: usize) {
        self.total = layers;
        let _ = writeln!(self.out, "pulling {image} ({digest}, {layers} layers)");
    }
    fn layer_start(&mut self, index: usize, digest: &Digest, size: u64) {
        *slot(&mut self.layers, index) = Some(LayerState {
            short: digest.short().to_string(),
            size,
            done: 0,
            outcome: None,
        });
    }
    fn layer_advance(&mut self, index: usize, done: u64) {
        if let Some(Some(l)) = self.layers.get_mut(index) {
            l.done = done;
        }
    }
    fn layer_done(&mut self, index: usize, outcome: LayerOutcome) {
        let total = self.total.max(self.layers.len());
        if let Some(Some(l)) = self.layers.get_mut(index) {
            let what = match outcome {
                LayerOutcome::Downloaded => "downloaded",
                LayerOutcome::Cached => "already present",
            };
            let _ = writeln!(
                self.out,
                "layer {}/{total} sha256:{} {} {what}",
                index + 1,
                l.short,
                human(l.size)
            );
        }
    }
    fn notice(&mut self, message: &str) {
        let _ = writeln!(self.out, "{message}");
    }
}

/// A bar per layer, redrawn in place at most ten times a second.
pub struct BarProgress<W: Write + Send> {
    out: W,
    layers: Vec<Option<LayerState>>,
    drawn_lines: usize,
    last_draw: Option<Instant>,
}

impl<W: Write + Send> BarProgress<W> {
    pub fn new(out: W) -> Self {
        BarProgress {
            out,
            layers: Vec::new(),
            drawn_lines: 0,
            last_draw: None,
        }
    }

    fn draw(&mut self, force: bool) {
        if !force
            && self
                .last_draw
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.last_draw = Some(Instant::now());
        let mut s = String::new();
        if self.drawn_lines > 0 {
            // Move up over the previous frame and redraw it.
            s.push_str(&format!("\x1b[{}F", self.drawn_lines));
        }
        let mut lines = 0;
        for l in self.layers.iter().flatten() {
            const WIDTH: usize = 30;
            let frac = if l.size == 0 {
                1.0
            } else {
                (l.done as f64 / l.size as f64).min(1.0)
            };
            let filled = (frac * WIDTH as f64) as usize;
            let status = match l.outcome {
                Some(LayerOutcome::Downloaded) => "done".to_string(),
                Some(LayerOutcome::Cached) => "already present".to_string(),
                None => format!("{} / {}", human(l.done), human(l.size)),
            };
            s.push_str(&format!(
                "\x1b[2K{} [{}{}] {status}\n",
                l.short,
                "=".repeat(filled),
                " ".repeat(WIDTH - filled)
            ));
            lines += 1;
        }
        self.drawn_lines = lines;
        let _ = self.out.write_all(s.as_bytes());
        let _ = self.out.flush();
    }
}

impl<W: Write + Send> Progress for BarProgress<W> {
    fn layer_start(&mut self, index: usize, digest: &Digest, size: u64) {
        *slot(&mut self.layers, index) = Some(LayerState {
            short: digest.short().to_string(),
            size,
            done: 0,
            outcome: None,
        });
        self.draw(true);
    }
    fn layer_advance(&mut self, index: usize, done: u64) {
        if let Some(Some(l)) = self.layers.get_mut(index) {
            l.done = done;
        }
        self.draw(false);
    }
    fn layer_done(&mut self, index: usize, outcome: LayerOutcome) {
        if let Some(Some(l)) = self.layers.get_mut(index) {
            l.outcome = Some(outcome);
            l.done = l.size;
        }
        self.draw(true);
    }
    fn notice(&mut self, message: &str) {
        // Above the bars: clear them, print the line, draw them again below it.
        let up = if self.drawn_lines > 0 {
            format!("\x1b[{}F\x1b[J", self.drawn_lines)
        } else {
            String::new()
        };
        let _ = writeln!(self.out, "{up}{message}");
        self.drawn_lines = 0;
        self.draw(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_prints_one_line_per_layer() {
        let mut p = PlainProgress::new(Vec::new());
        let d1 = Digest::of(b"1");
        let d2 = Digest::of(b"2");
        p.resolved("localhost:5000/w:1", &Digest::of(b"m"), 2);
        p.layer_start(0, &d1, 1536);
        p.layer_start(1, &d2, 10);
        p.layer_advance(0, 100);
        p.layer_done(1, LayerOutcome::Cached);
        p.layer_done(0, LayerOutcome::Downloaded);
        let out = String::from_utf8(p.into_inner()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("pulling localhost:5000/w:1 (sha256:"));
        assert_eq!(
            lines[1],
            format!("layer 2/2 sha256:{} 10 B already present", d2.short())
        );
        assert_eq!(
            lines[2],
            format!("layer 1/2 sha256:{} 1.5 KiB downloaded", d1.short())
        );
    }

    #[test]
    fn bars_redraw_in_place() {
        let mut p = BarProgress::new(Vec::new());
        p.layer_start(0, &Digest::of(b"1"), 100);
        p.layer_start(1, &Digest::of(b"2"), 100);
        p.layer_done(0, LayerOutcome::Downloaded);
        let out = String::from_utf8(p.out).unwrap();
        assert!(out.contains("\x1b[2F"), "moves up over two bars: {out:?}");
        assert!(out.contains("done"));
    }
}
