//! Certificates at run time: where each listener's certificates come from,
//! which one a handshake gets, and keeping them current without a signal.
//!
//! A listener's `tls` is a list of [`Source`]s: a `cert`/`key` pair of
//! files, or an ACME entry. Each source is held in a [`Slot`], the
//! certificate in service for it, swapped atomically when a newer one is
//! ready; handshakes read the slot, open connections never see a swap.
//! The [`Store`] hands out one slot per source for the whole process, so a
//! reload that keeps a source keeps its slot, its watcher (`files`) or
//! its ACME manager ([`acme`]); a slot that no configuration uses any more
//! is dropped with the last connection of its generation, and its task
//! stops with it. `resolver` picks the slot for a handshake by SNI
//! ([`sni`]); [`material`] is what a slot holds.

pub mod acme;
mod files;
pub mod material;
mod resolver;
pub mod sni;

use crate::metrics::{CertificateExpiry, Metrics};
use acme::challenge::Challenges;
use arc_swap::ArcSwapOption;
use material::Material;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;

/// Where one certificate of a listener comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// PEM files, loaded and checked by validation; watched at run time.
    Files(FilePair),
    /// Obtained and renewed by ACME.
    Acme(Arc<acme::Settings>),
}

/// A `{ cert, key }` entry.
#[derive(Debug, Clone)]
pub struct FilePair {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The pair as it was read when the route file was checked.
    pub material: Arc<Material>,
}

impl Source {
    /// How a reload report names this source.
    pub fn describe(&self) -> String {
        match self {
            Source::Files(pair) => format!("{} {}", pair.cert.display(), pair.key.display()),
            Source::Acme(settings) => format!(
                "acme {} {} {}",
                settings.domains.join(","),
                settings.directory,
                settings.cache.display()
            ),
        }
    }

    /// The names this source serves (configured names for ACME).
    pub fn names(&self) -> Vec<String> {
        match self {
            Source::Files(pair) => pair.material.names.clone(),
            Source::Acme(settings) => settings.domains.clone(),
        }
    }
}

/// The certificate in service for one source.
#[derive(Debug)]
pub struct Slot {
    current: ArcSwapOption<Material>,
    /// Stops the slot's watcher or ACME manager when the slot goes.
    stop: CancellationToken,
}

impl Slot {
    fn new(material: Option<Arc<Material>>) -> Arc<Slot> {
        Arc::new(Slot {
            current: ArcSwapOption::new(material),
            stop: CancellationToken::new(),
        })
    }

    /// The certificate in service, if there is one yet.
    pub fn current(&self) -> Option<Arc<Material>> {
        self.current.load_full()
    }

    /// Put `material` in service for every handshake from now on.
    pub fn set(&self, material: Arc<Material>) {
        self.current.store(Some(material));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What identifies a slot across reloads.
#[derive(Debug, PartialEq, Eq)]
enum SlotKey {
    Files(PathBuf, PathBuf),
    Acme(acme::Settings),
}

/// Every slot of the process, and the challenge answers ACME publishes.
pub struct Store {
    metrics: Arc<Metrics>,
    slots: Mutex<Vec<(SlotKey, Weak<Slot>)>>,
    challenges: Arc<Challenges>,
    /// The listeners of the newest configuration and their slots, for the
    /// expiry metric.
    in_service: Mutex<Vec<(String, Vec<Weak<Slot>>)>>,
}

impl Store {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Store> {
        let store = Arc::new(Store {
            metrics: metrics.clone(),
            slots: Mutex::new(Vec::new()),
            challenges: Arc::new(Challenges::default()),
            in_service: Mutex::new(Vec::new()),
        });
        let weak: Weak<Store> = Arc::downgrade(&store);
        metrics.certificates_from(weak);
        store
    }

    /// The challenge answers published now (HTTP-01 on plain listeners).
    pub fn challenges(&self) -> &Challenges {
        &self.challenges
    }

    /// A new configuration is being built: forget which listeners the last
    /// one had (for the expiry metric).
    pub fn begin_generation(&self) {
        self.in_service
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The TLS settings for the listener `name` with `sources`, built on
    /// what the listener's own keys say (`base`). Must run inside a Tokio
    /// runtime: new sources start their task on it.
    pub fn listener(
        &self,
        name: &str,
        sources: &[Source],
        base: crate::tls::Settings,
    ) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let slots: Vec<Arc<Slot>> = sources.iter().map(|s| self.slot(s)).collect();
        self.in_service
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_string(), slots.iter().map(Arc::downgrade).collect()));
        let mut settings = base;
        settings.acme_tls_alpn = sources
            .iter()
            .any(|s| matches!(s, Source::Acme(a) if a.challenge == acme::ChallengeKind::TlsAlpn01));
        let resolver = resolver::Resolver::new(slots, self.challenges.clone());
        crate::tls::server_config(Arc::new(resolver), settings)
    }

    /// The slot for `source`: the one in use, or a new one with its task.
    fn slot(&self, source: &Source) -> Arc<Slot> {
        let key = match source {
            Source::Files(pair) => SlotKey::Files(pair.cert.clone(), pair.key.clone()),
            Source::Acme(settings) => SlotKey::Acme(settings.as_ref().clone()),
        };
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|(_, slot)| slot.strong_count() > 0);
        let existing = slots
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, slot)| slot.upgrade());
        if let Some(slot) = existing {
            if let Source::Files(pair) = source {
                // A reload read the files again: what it read is in force.
                let same = slot.current().is_some_and(|m| m.pem == pair.material.pem);
                if !same {
                    slot.set(pair.material.clone());
                }
            }
            return slot;
        }
        let slot = match source {
            Source::Files(pair) => {
                let slot = Slot::new(Some(pair.material.clone()));
                tokio::spawn(files::watch(
                    Arc::downgrade(&slot),
                    pair.cert.clone(),
                    pair.key.clone(),
                    slot.stop.clone(),
                ));
                slot
            }
            Source::Acme(settings) => {
                let cached = acme::cached(settings).map(Arc::new);
                if let Some(material) = &cached {
                    tracing::info!(
                        "ACME certificate for {} from the cache, valid until {}",
                        settings.domains.join(", "),
                        httpdate::fmt_http_date(material.not_after)
                    );
                }
                // Domains changed by a reload: until the new certificate is
                // issued, the one in service for the entry it replaces
                // (same directory and cache) goes on serving.
                let stand_in = || {
                    slots.iter().find_map(|(key, slot)| match key {
                        SlotKey::Acme(other)
                            if other.directory == settings.directory
                                && other.cache == settings.cache =>
                        {
                            slot.upgrade()?.current()
                        }
                        _ => None,
                    })
                };
                let slot = Slot::new(cached.or_else(stand_in));
                tokio::spawn(acme::manage(
                    settings.clone(),
                    Arc::downgrade(&slot),
                    self.challenges.clone(),
                    self.metrics.clone(),
                    slot.stop.clone(),
                ));
                slot
            }
        };
        slots.push((key, Arc::downgrade(&slot)));
        slot
    }
}

impl CertificateExpiry for Store {
    fn expiries(&self) -> Vec<(String, String, SystemTime)> {
        let in_service = self.in_service.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (listener, slots) in in_service.iter() {
            for material in slots.iter().filter_map(|s| s.upgrade()?.current()) {
                let entry = (
                    listener.clone(),
                    material.label().to_string(),
                    material.not_after,
                );
                if !out.contains(&entry) {
                    out.push(entry);
                }
            }
        }
        out
    }
}
