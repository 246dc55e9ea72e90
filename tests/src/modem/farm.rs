//! A farm of emulated modems: N modems with distinct identities derived
//! from one seed, each with its own pair of ptys (and links), as a hub with
//! N AUTO slots would see them.
//!
//! Owns the modems' lifetimes (dropping the farm stops them all). Never
//! shares state between modems.

use std::io;
use std::path::{Path, PathBuf};

use super::config::ModemConfig;
use super::identity::Identity;
use super::profile::Profile;
use super::runner::EmulatedModem;

/// Running modems, index 0 to N-1.
#[derive(Debug)]
pub struct ModemFarm {
    modems: Vec<EmulatedModem>,
    link_dir: Option<PathBuf>,
}

impl ModemFarm {
    /// Starts `count` modems of `profile`, identities from `seed`, links
    /// under `link_dir` when given.
    pub fn start(
        count: u32,
        profile: Profile,
        seed: u64,
        link_dir: Option<&Path>,
    ) -> io::Result<ModemFarm> {
        Self::start_with(count, profile, seed, link_dir, |_, _| {})
    }

    /// Like [`ModemFarm::start`], with `tweak(index, config)` adjusting
    /// each modem's configuration (callees, timings, faults…) before it
    /// starts.
    pub fn start_with(
        count: u32,
        profile: Profile,
        seed: u64,
        link_dir: Option<&Path>,
        mut tweak: impl FnMut(u32, &mut ModemConfig),
    ) -> io::Result<ModemFarm> {
        let mut modems = Vec::new();
        for index in 0..count {
            let mut config = ModemConfig::new(profile, Identity::from_seed(seed, index, profile));
            tweak(index, &mut config);
            modems.push(EmulatedModem::start(config, link_dir)?);
        }
        Ok(ModemFarm {
            modems,
            link_dir: link_dir.map(Path::to_owned),
        })
    }

    /// The modems, in index order.
    pub fn modems(&self) -> &[EmulatedModem] {
        &self.modems
    }

    /// Modem `index`.
    pub fn get(&self, index: usize) -> Option<&EmulatedModem> {
        self.modems.get(index)
    }

    /// How many modems run.
    pub fn len(&self) -> usize {
        self.modems.len()
    }

    /// Whether the farm is empty.
    pub fn is_empty(&self) -> bool {
        self.modems.is_empty()
    }

    /// The link directory, when given.
    pub fn link_dir(&self) -> Option<&Path> {
        self.link_dir.as_deref()
    }
}
