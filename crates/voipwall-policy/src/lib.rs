//! voipwall's policy model.
//!
//! Policy text (TOML, possibly several files through `include`) goes in; a
//! validated [`Policy`] comes out, or every problem found, each with
//! `file:line:col` and a snippet ([`Diagnostic`]). The built-in [`Catalog`] of
//! services and vendor presets is data (`data/services`, `data/presets`),
//! embedded in the binary and overridable from `/usr/share` and `/etc`.
//!
//! This crate does no I/O and never reads the clock: files arrive through a
//! closure the caller supplies, host facts through [`HostFacts`].
#![warn(missing_docs)]

mod catalog;
pub mod crowdsec;
mod detect;
mod diag;
pub mod feed;
mod lists;
mod load;
mod model;
mod walk;

pub mod call;
pub use call::{CallAction, CallFrom, CallRule, CallSettings, Hours, Numbering};
pub use catalog::{Catalog, DataFile, Example, Expect, Preset};
pub use detect::{DetectMode, DetectSettings, RuleOverride, ThresholdSetting, UserLogFormat};
pub use diag::{Diagnostic, FileId, Severity, SourceMap, did_you_mean, render_all};
pub use load::{HostFacts, Loaded, covers_any, load, sshd_ports};
pub use model::*;
