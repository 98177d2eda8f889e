//! `config.yaml`: the declarative list of workers.
