//! murphy: a CI/CD pipeline runner built on the assumption that anything can go wrong.
//!
//! Data flows one way: [`config`] reads `pipeline.yml`, [`plan`] validates it into an
//! immutable DAG, [`executor`] runs it, and [`journal`] / [`records`] keep what happened.
//! See ARCHITECTURE.md for the map and the invariants.

pub mod annotations;
pub mod archive;
pub mod atomic_file;
pub mod causes;
pub mod change;
pub mod ci;
pub mod cli;
pub mod config;
pub mod crash;
pub mod diagnostic;
pub mod environment;
pub mod events;
pub mod executor;
pub mod extends;
pub mod fingerprint;
pub mod folds;
pub mod git;
pub mod gitignore;
pub mod glance;
pub mod graph;
pub mod hooks;
pub mod include;
pub mod index;
pub mod init;
pub mod inputs;
pub mod issues;
pub mod journal;
pub mod junit;
pub mod lock;
pub mod markup;
pub mod matrix;
pub mod outbox;
pub mod plan;
pub mod process;
pub mod publish;
pub mod random;
pub mod records;
pub mod release;
pub mod remote;
pub mod report;
pub mod secrets;
pub mod serve;
pub mod session;
pub mod shell;
pub mod stat_cache;
pub mod step_summary;
pub mod store;
pub mod trigger;
pub mod version;
pub mod workflow;
