//! ACME (RFC 8555): certificates obtained and renewed by Switchyard itself.
//!
//! Each `tls = { acme = { … } }` entry gets a manager task for as long as a
//! configuration uses it. At start it serves the certificate kept in the
//! `cache` folder (`cache`), if one names every domain; it orders one when
//! there is none, and renews `renew_before` the end of its validity (30
//! days, or a third of the lifetime for certificates shorter than 90 days).
//! Challenges are answered by the proxy's own listeners ([`challenge`]):
//! TLS-ALPN-01 on the TLS listener, or HTTP-01 on a plain one. A failed
//! order is logged with the ACME server's problem document, counted, and
//! tried again after a backoff (10 s, doubling up to 1 h); the certificate
//! in service stays in service whatever happens. The protocol itself is
//! `instant-acme`'s; the HTTPS client under it is `http`.

mod cache;
pub mod challenge;
mod http;

use super::Slot;
use super::material::Material;
use crate::metrics::Metrics;
use challenge::{Challenges, Published};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// Let's Encrypt's production directory: the default `directory`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Renew this long before a certificate expires, at most.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The first wait after a failed order; it doubles up to [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(10);
const LAST_RETRY: Duration = Duration::from_secs(3600);
/// The longest single sleep, so a clock that jumped is noticed.
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// One `acme = { … }` table, checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Settings {
    /// DNS names, lower-case; the first names the certificate.
    pub domains: Vec<String>,
    pub email: Option<String>,
    pub directory: String,
    /// A PEM file of roots to trust for the directory's HTTPS.
    pub directory_ca: Option<PathBuf>,
    pub cache: PathBuf,
    pub challenge: ChallengeKind,
    /// Renew this long before expiry (default: [`RENEW_BEFORE`], at most a
    /// third of the certificate's lifetime).
    pub renew_before: Option<Duration>,
}

/// How the ACME server checks that the domains are ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChallengeKind {
    /// On the TLS listener itself (RFC 8737): no port 80 needed.
    #[default]
    TlsAlpn01,
    /// `GET /.well-known/acme-challenge/TOKEN` on a plain listener.
    Http01,
}

impl ChallengeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
            ChallengeKind::Http01 => "http-01",
        }
    }

    fn acme_type(self) -> ChallengeType {
        match self {
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
            ChallengeKind::Http01 => ChallengeType::Http01,
        }
    }
}

impl Settings {
    /// When `material` is due for renewal.
    pub fn renew_at(&self, material: &Material) -> SystemTime {
        let before = self
            .renew_before
            .unwrap_or_else(|| RENEW_BEFORE.min(material.lifetime() / 3));
        material
            .not_after
            .checked_sub(before)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    #[cfg(test)]
    pub fn for_tests() -> Settings {
        Settings {
            domains: vec!["chat.example.com".into()],
            email: None,
            directory: LETS_ENCRYPT.into(),
            directory_ca: None,
            cache: PathBuf::from("/nonexistent"),
            challenge: ChallengeKind::default(),
            renew_before: None,
        }
    }
}

/// The certificate kept in the cache for `settings`, if any.
pub fn cached(settings: &Settings) -> Option<Material> {
    cache::load_certificate(settings)
}

/// Keep `slot` supplied with a certificate for `settings` until `stop`.
pub(super) async fn manage(
    settings: Arc<Settings>,
    slot: Weak<Slot>,
    challenges: Arc<Challenges>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let names = settings.domains.join(", ");
    let mut retry = FIRST_RETRY;
    loop {
        let Some(current) = slot.upgrade().map(|s| s.current()) else {
            return;
        };
        if let Some(material) = current.as_ref().filter(|m| m.covers(&settings.domains)) {
            let due = settings.renew_at(material);
            if let Ok(wait) = due.duration_since(SystemTime::now()) {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait.min(LONGEST_SLEEP)) => continue,
                }
            }
        }
        let renewal = current.is_some();
        if current.is_none() {
            tracing::info!(
                "ordering an ACME certificate for {names} from {}",
                settings.directory
            );
        }
        let started = Instant::now();
        let result = tokio::select! {
            () = stop.cancelled() => return,
            result = issue(&settings, &challenges) => result,
        };
        let Some(slot) = slot.upgrade() else {
            return;
        };
        match result {
            Ok((material, chain, key)) => {
                metrics.acme_renewal(true);
                retry = FIRST_RETRY;
                if let Err(e) = cache::save_certificate(&settings, &chain, &key) {
                    tracing::warn!(
                        "certificate for {names} obtained but not cached in {}: {e}",
                        settings.cache.display()
                    );
                }
                tracing::info!(
                    domains = %names,
                    took_ms = started.elapsed().as_millis() as u64,
                    "ACME certificate {} for {names} in {:.2} s; valid until {}",
                    if renewal { "renewed" } else { "obtained" },
                    started.elapsed().as_secs_f64(),
                    httpdate::fmt_http_date(material.not_after)
                );
                slot.set(Arc::new(material));
            }
            Err(error) => {
                metrics.acme_renewal(false);
                let keeping = if renewal {
                    "the certificate in service stays in service"
                } else {
                    "no certificate for these names yet"
                };
                match &error {
                    AcmeError::Api { during, problem } => tracing::error!(
                        domains = %names,
                        problem_type = problem.r#type.as_deref().unwrap_or(""),
                        problem_status = problem.status.unwrap_or(0),
                        "ACME order for {names} failed: {during}: {problem}; {keeping}; \
                         trying again in {retry:?}"
                    ),
                    other => tracing::error!(
                        domains = %names,
                        "ACME order for {names} failed: {other}; {keeping}; \
                         trying again in {retry:?}"
                    ),
                }
                drop(slot);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(LAST_RETRY);
            }
        }
    }
}

/// Why an order failed.
#[derive(Debug)]
pub enum AcmeError {
    /// The ACME server answered with a problem document (RFC 7807).
    Api {
        during: &'static str,
        problem: instant_acme::Problem,
    },
    /// Anything else: the server unreachable, a bad answer, the cache.
    Other { during: &'static str, error: String },
}

impl fmt::Display for AcmeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcmeError::Api { during, problem } => write!(f, "{during}: {problem}"),
            AcmeError::Other { during, error } => write!(f, "{during}: {error}"),
        }
    }
}

fn failed(during: &'static str) -> impl Fn(instant_acme::Error) -> AcmeError {
    move |error| match error {
        instant_acme::Error::Api(problem) => AcmeError::Api { during, problem },
        other => AcmeError::Other {
            during,
            error: other.to_string(),
        },
    }
}

/// Order a certificate for `settings`: account, order, challenges,
/// finalization. Returns the material with its PEM chain and key.
async fn issue(
    settings: &Settings,
    challenges: &Arc<Challenges>,
) -> Result<(Material, String, String), AcmeError> {
    let account = account(settings).await?;
    let identifiers: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(failed("new order"))?;
    // Answers stay published until the order is done, one way or another.
    let mut published = Published::new(challenges.clone());
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(failed("authorization"))?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => {
                return Err(AcmeError::Other {
                    during: "authorization",
                    error: format!("authorization is {other:?}"),
                });
            }
        }
        let kind = settings.challenge;
        let Some(mut challenge) = authorization.challenge(kind.acme_type()) else {
            return Err(AcmeError::Other {
                during: "authorization",
                error: format!("the ACME server offers no {} challenge", kind.as_str()),
            });
        };
        let name = challenge.identifier().to_string();
        let key_authorization = challenge.key_authorization();
        match kind {
            ChallengeKind::TlsAlpn01 => published
                .tls_alpn(&name, key_authorization.digest().as_ref())
                .map_err(|error| AcmeError::Other {
                    during: "challenge",
                    error,
                })?,
            ChallengeKind::Http01 => published.http01(&challenge.token, key_authorization.as_str()),
        }
        challenge.set_ready().await.map_err(failed("challenge"))?;
    }
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(100))
        .backoff(1.5)
        .timeout(Duration::from_secs(90));
    let status = order
        .poll_ready(&retries)
        .await
        .map_err(failed("validation"))?;
    if status != OrderStatus::Ready {
        return Err(invalid_order(&mut order).await);
    }
    drop(published);
    let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Other {
        during: "key",
        error: e.to_string(),
    })?;
    let csr = rcgen::CertificateParams::new(settings.domains.clone())
        .and_then(|params| params.serialize_request(&key))
        .map_err(|e| AcmeError::Other {
            during: "certificate request",
            error: e.to_string(),
        })?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(failed("finalization"))?;
    let chain = order
        .poll_certificate(&retries)
        .await
        .map_err(failed("certificate download"))?;
    let key_pem = key.serialize_pem();
    let material = Material::from_pem(&chain, &key_pem).map_err(|e| AcmeError::Other {
        during: "certificate",
        error: e.to_string(),
    })?;
    Ok((material, chain, key_pem))
}

/// The problem of an order that became invalid: the first challenge error
/// the server reports.
async fn invalid_order(order: &mut instant_acme::Order) -> AcmeError {
    let mut authorizations = order.authorizations();
    while let Some(Ok(authorization)) = authorizations.next().await {
        if let Some(problem) = authorization
            .challenges
            .iter()
            .find_map(|c| c.error.clone())
        {
            return AcmeError::Api {
                during: "validation",
                problem,
            };
        }
    }
    AcmeError::Other {
        during: "validation",
        error: "the order became invalid".into(),
    }
}

/// The cached account, or a new one (then cached).
async fn account(settings: &Settings) -> Result<Account, AcmeError> {
    let http = || {
        http::client(settings.directory_ca.as_deref()).map_err(|error| AcmeError::Other {
            during: "HTTPS client",
            error,
        })
    };
    let path = cache::account_path(settings);
    if let Ok(text) = std::fs::read(&path) {
        match serde_json::from_slice::<AccountCredentials>(&text) {
            Ok(credentials) => {
                return Account::builder_with_http(http()?)
                    .from_credentials(credentials)
                    .await
                    .map_err(failed("account"));
            }
            Err(e) => tracing::warn!(
                "ACME account {} unreadable ({e}); registering a new one",
                path.display()
            ),
        }
    }
    let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(http()?)
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await
        .map_err(failed("account registration"))?;
    let text = serde_json::to_vec_pretty(&credentials).map_err(|e| AcmeError::Other {
        during: "account",
        error: e.to_string(),
    })?;
    cache::write_private(&path, &text).map_err(|e| AcmeError::Other {
        during: "account",
        error: format!("cannot write {}: {e}", path.display()),
    })?;
    tracing::info!(
        "ACME account registered at {}; kept in {}",
        settings.directory,
        path.display()
    );
    Ok(account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_a_third_of_the_lifetime_before_expiry_at_most_30_days() {
        let key = rcgen::KeyPair::generate().unwrap();
        let now = SystemTime::now();
        let make = |days: u64| {
            let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
            params.not_before = now.into();
            params.not_after = (now + Duration::from_secs(days * 86400)).into();
            let cert = params.self_signed(&key).unwrap();
            Material::from_pem(&cert.pem(), &key.serialize_pem()).unwrap()
        };
        let settings = Settings::for_tests();
        let ninety = make(90);
        let left = ninety.not_after.duration_since(settings.renew_at(&ninety));
        assert_eq!(left.unwrap().as_secs(), 30 * 86400);
        let six = make(6);
        let left = six.not_after.duration_since(settings.renew_at(&six));
        assert_eq!(left.unwrap().as_secs(), 2 * 86400);
        let fixed = Settings {
            renew_before: Some(Duration::from_secs(3600)),
            ..Settings::for_tests()
        };
        let left = six.not_after.duration_since(fixed.renew_at(&six));
        assert_eq!(left.unwrap().as_secs(), 3600);
    }
}
