//! Entries of `workers:` that do not validate (a name that cannot be one, a missing image, an
//! unknown field), and the lenient loader that sets them aside instead of failing.
//!
//! The strict [`Config::load`] refuses the whole file over one such entry, which is right for
//! starting workers; but then `list` could not show what is wrong and `remove` could not take
//! the entry out. Those two use [`Config::load_lenient`]. The YAML itself must still parse,
//! and so must `engine:` and `vm:`: only single entries are set aside.

use std::collections::HashSet;
use std::path::Path;

use serde_yaml::Value;

use super::{classify, std_lookup, yaml_error, Classified, Config, RawConfig, RawWorker};
use crate::{err, Result};

/// One entry of `workers:` that does not validate, as far as it can be read.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidEntry {
    /// Position in `workers:` (0-based, counting every entry).
    pub index: usize,
    /// Its `name:` as written, if it has a string one (it may not be a valid name).
    pub name: Option<String>,
    /// Its `image:` as written, if any.
    pub image: Option<String>,
    /// Why it is invalid, as the strict loader says it: `<file>: workers[<i>]: …`.
    pub error: String,
}

impl Config {
    /// [`Config::load`], with invalid entries set aside in [`Config::invalid`].
    pub fn load_lenient(path: &Path) -> Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse_lenient(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(err!("reading {}: {e}", path.display())),
        }
    }

    /// [`Config::parse`], with invalid entries set aside in [`Config::invalid`].
    pub fn parse_lenient(text: &str, path: &Path) -> Result<Config> {
        let strict = match Config::parse(text, path) {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        // Entry by entry: anything that is not about one entry fails as before.
        let Ok(Value::Mapping(mut doc)) = serde_yaml::from_str::<Value>(text) else {
            return Err(strict);
        };
        let entries = match doc.remove("workers") {
            Some(Value::Sequence(s)) => s,
            _ => return Err(strict),
        };
        let rest: RawConfig =
            serde_yaml::from_value(Value::Mapping(doc)).map_err(|e| yaml_error(path, &e))?;
        let mut config = Config {
            engine: rest.engine.unwrap_or_default(),
            vm: rest.vm.unwrap_or_default(),
            ..Config::default()
        };
        let mut names = HashSet::new();
        for (index, value) in entries.into_iter().enumerate() {
            let text_of = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
            let (name, image) = (text_of("name"), text_of("image"));
            let raw = serde_yaml::from_value::<RawWorker>(value).map_err(|e| e.to_string());
            let raw = raw.and_then(|w| match names.insert(w.name.clone()) {
                true => Ok(w),
                false => Err(format!("duplicate worker name {:?}", w.name)),
            });
            match raw.and_then(|w| classify(w, index, &std_lookup)) {
                Ok(Classified::Worker(w)) => config.workers.push(w),
                Ok(Classified::Builtin(b)) => config.builtins.push(b),
                Ok(Classified::AlwaysOn) => {}
                Err(m) => config.invalid.push(InvalidEntry {
                    index,
                    name,
                    image,
                    error: format!("{}: workers[{index}]: {m}", path.display()),
                }),
            }
        }
        Ok(config)
    }

    /// Position in `workers:` of each entry of [`Config::workers`] (they fill the positions
    /// that [`Config::invalid`] leaves free, in order).
    pub fn positions(&self) -> Vec<usize> {
        let taken: HashSet<usize> = self
            .invalid
            .iter()
            .map(|e| e.index)
            .chain(self.builtins.iter().map(|b| b.index))
            .collect();
        (0..self.workers.len() + self.invalid.len() + self.builtins.len())
            .filter(|i| !taken.contains(i))
            .collect()
    }

    /// Position in `workers:` of the entry named `name`: the valid one, else an invalid entry
    /// written with that name.
    pub fn position_of(&self, name: &str) -> Option<usize> {
        match self.workers.iter().position(|w| w.name == name) {
            Some(k) => self.positions().get(k).copied(),
            None => self
                .invalid
                .iter()
                .find(|e| e.name.as_deref() == Some(name))
                .map(|e| e.index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lenient(t: &str) -> Result<Config> {
        Config::parse_lenient(t, Path::new("config.yaml"))
    }

    #[test]
    fn bad_entries_are_set_aside_in_order_and_good_ones_kept() {
        let c = lenient(
            "workers:\n  - {name: a, image: x/a}\n  - {name: ../../v, image: x/v}\n  \
             - {name: b, image: x/b}\n  - {name: a, image: x/dup}\n  - {image: x/n}\n  \
             - {name: t, imgae: x/t}\nengine: {port: 7}\n",
        )
        .unwrap();
        let names: Vec<_> = c.workers.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(c.engine.port, Some(7));
        let bad: Vec<_> = c
            .invalid
            .iter()
            .map(|e| (e.index, e.name.as_deref()))
            .collect();
        assert_eq!(
            bad,
            [
                (1, Some("../../v")),
                (3, Some("a")),
                (4, None),
                (5, Some("t"))
            ]
        );
        assert!(c.invalid[0]
            .error
            .starts_with("config.yaml: workers[1]: invalid worker name"));
        assert!(
            c.invalid[1].error.contains("duplicate"),
            "{:?}",
            c.invalid[1]
        );
        assert!(c.invalid[3].error.contains("imgae"), "{:?}", c.invalid[3]);
        assert_eq!(c.positions(), [0, 2]);
        assert_eq!(c.position_of("b"), Some(2));
        assert_eq!(c.position_of("a"), Some(0), "the valid entry first");
        assert_eq!(c.position_of("../../v"), Some(1));
        assert_eq!(c.position_of("zz"), None);
    }

    #[test]
    fn only_entries_are_set_aside() {
        assert!(lenient("workers: [unclosed\n").is_err());
        assert!(lenient("workers:\n  - {name: a, image: x/a}\nengine: {prot: 1}\n").is_err());
        let ok = lenient("workers:\n  - {name: a, image: x/a}\n").unwrap();
        assert!(ok.invalid.is_empty());
        assert_eq!(
            ok,
            Config::parse("workers:\n  - {name: a, image: x/a}\n", Path::new("c")).unwrap()
        );
    }
}
