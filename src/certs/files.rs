//! Certificate files that change on disk (cert-manager, certbot, an
//! operator's `cp`): the pair is polled ([`crate::watch`]) and, once both
//! files have settled and load as a matching pair, put in service. A pair
//! that does not load is logged once per change and the certificate in
//! service stays.

use super::Slot;
use super::material::Material;
use crate::watch::{POLL, Watch};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub(super) async fn watch(slot: Weak<Slot>, cert: PathBuf, key: PathBuf, stop: CancellationToken) {
    let mut watch = Watch::new(vec![cert.clone(), key.clone()]);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !watch.poll() {
            continue;
        }
        let Some(slot) = slot.upgrade() else {
            return;
        };
        match Material::load(&cert, &key) {
            Ok(material) => {
                if slot.current().is_some_and(|m| m.pem == material.pem) {
                    continue;
                }
                tracing::info!(
                    cert = %cert.display(),
                    "certificate {} reloaded from disk: {}; valid until {}",
                    cert.display(),
                    material.names.join(", "),
                    httpdate::fmt_http_date(material.not_after)
                );
                slot.set(Arc::new(material));
            }
            Err(e) => tracing::error!(
                cert = %cert.display(),
                "changed certificate not loaded: {e}; the certificate in service stays"
            ),
        }
    }
}
