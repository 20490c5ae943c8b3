//! The results: medians over rounds per (workload, target), ratios to
//! nginx, HAProxy and direct, the markdown tables, the list of places where
//! Switchyard misses the bar (the better of nginx and HAProxy), and the
//! per-measurement log.

use std::fmt::Write as _;

use super::settings::{TargetKind, Workload};
use super::workloads::Sample;

/// Medians of one (workload, target) over its rounds.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub rate: Option<f64>,
    pub p99_us: Option<f64>,
    pub proxy_cpu: Option<f64>,
    pub backend_cpu: Option<f64>,
    pub errors: u64,
    // Hold only.
    pub kib_per_tunnel: Option<f64>,
    pub rss_before: Option<f64>,
    pub rss_full: Option<f64>,
    pub rss_released: Option<f64>,
    pub master_kib: Option<f64>,
    pub p99_1k_us: Option<f64>,
    pub held: Option<f64>,
}

pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

pub fn summarize(samples: &[Sample], workload: Workload, target: TargetKind) -> Option<Summary> {
    let mine: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.workload == workload && s.target == target)
        .collect();
    if mine.is_empty() {
        return None;
    }
    let med =
        |f: &dyn Fn(&Sample) -> Option<f64>| median(mine.iter().filter_map(|s| f(s)).collect());
    let kib = |m: Option<super::targets::Memory>| m.map(|m| m.kib as f64);
    Some(Summary {
        rate: med(&|s| s.rate),
        p99_us: med(&|s| s.p99_us),
        proxy_cpu: med(&|s| s.proxy_cpu),
        backend_cpu: med(&|s| s.backend_cpu),
        errors: mine.iter().map(|s| s.errors).sum(),
        kib_per_tunnel: med(&|s| s.hold.as_ref()?.kib_per_tunnel()),
        rss_before: med(&|s| kib(s.hold.as_ref()?.before)),
        rss_full: med(&|s| kib(s.hold.as_ref()?.at_full)),
        rss_released: med(&|s| kib(s.hold.as_ref()?.released)),
        master_kib: med(&|s| Some(s.hold.as_ref()?.at_full?.master_kib? as f64)),
        p99_1k_us: med(&|s| s.hold.as_ref()?.p99_1k_us),
        held: med(&|s| Some(s.hold.as_ref()?.tunnels_held as f64)),
    })
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v >= 10_000.0 => group(v.round() as u64),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(us: Option<f64>) -> String {
    us.map_or("—".into(), |us| format!("{:.2} ms", us / 1000.0))
}

fn ratio(value: Option<f64>, reference: Option<f64>) -> String {
    match (value, reference) {
        (Some(v), Some(r)) if r > 0.0 => format!("{:.2}×", v / r),
        _ => "—".into(),
    }
}

/// Everything the tables need, in display order.
pub struct Results<'a> {
    pub samples: &'a [Sample],
    pub workloads: &'a [Workload],
    pub targets: &'a [TargetKind],
}

impl Results<'_> {
    fn get(&self, w: Workload, t: TargetKind) -> Option<Summary> {
        summarize(self.samples, w, t)
    }

    /// The throughput table: one row per (workload, target).
    pub fn main_table(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| Workload | Target | Throughput | ×nginx | ×HAProxy | ×direct | p99 | ×nginx | ×HAProxy | ×direct | Proxy CPU/op | ×nginx | ×HAProxy | Backend CPU/op | Errors |\n\
             |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        for &w in self.workloads.iter().filter(|w| **w != Workload::Hold) {
            let ng = self.get(w, TargetKind::Nginx).unwrap_or_default();
            let ha = self.get(w, TargetKind::Haproxy).unwrap_or_default();
            let di = self.get(w, TargetKind::Direct).unwrap_or_default();
            for &t in self.targets {
                let Some(s) = self.get(w, t) else { continue };
                let _ = writeln!(
                    out,
                    "| {} | {t} | {} {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    w.title(),
                    num(s.rate),
                    w.rate_unit(),
                    ratio(s.rate, ng.rate),
                    ratio(s.rate, ha.rate),
                    ratio(s.rate, di.rate),
                    ms(s.p99_us),
                    ratio(s.p99_us, ng.p99_us),
                    ratio(s.p99_us, ha.p99_us),
                    ratio(s.p99_us, di.p99_us),
                    s.proxy_cpu.map_or("—".into(), |v| format!(
                        "{} {}",
                        num(Some(v)),
                        w.cpu_unit()
                    )),
                    ratio(s.proxy_cpu, ng.proxy_cpu),
                    ratio(s.proxy_cpu, ha.proxy_cpu),
                    s.backend_cpu.map_or("—".into(), |v| format!(
                        "{} {}",
                        num(Some(v)),
                        w.cpu_unit()
                    )),
                    s.errors,
                );
            }
        }
        out
    }

    /// The held-tunnels table.
    pub fn hold_table(&self) -> String {
        let w = Workload::Hold;
        if !self.workloads.contains(&w) {
            return String::new();
        }
        let ng = self.get(w, TargetKind::Nginx).unwrap_or_default();
        let ha = self.get(w, TargetKind::Haproxy).unwrap_or_default();
        let di = self.get(w, TargetKind::Direct).unwrap_or_default();
        let mut out = String::new();
        out.push_str(
            "| Target | Held | RSS before | RSS held | RSS after release | KiB/tunnel | ×nginx | ×HAProxy | echo p99 @1k | echo p99 @all | all/1k | ×nginx | ×HAProxy | ×direct | Errors |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        let mib = |kib: Option<f64>| kib.map_or("—".into(), |k| format!("{:.1} MiB", k / 1024.0));
        for &t in self.targets {
            let Some(s) = self.get(w, t) else { continue };
            let _ = writeln!(
                out,
                "| {t} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.held.map_or("—".into(), |h| group(h as u64)),
                mib(s.rss_before),
                mib(s.rss_full),
                mib(s.rss_released),
                num(s.kib_per_tunnel),
                ratio(s.kib_per_tunnel, ng.kib_per_tunnel),
                ratio(s.kib_per_tunnel, ha.kib_per_tunnel),
                ms(s.p99_1k_us),
                ms(s.p99_us),
                ratio(s.p99_us, s.p99_1k_us),
                ratio(s.p99_us, ng.p99_us),
                ratio(s.p99_us, ha.p99_us),
                ratio(s.p99_us, di.p99_us),
                s.errors,
            );
        }
        if let Some(master) = ng.master_kib {
            let _ = writeln!(
                out,
                "\nnginx RSS is its two workers summed; the master process ({:.1} MiB) is not included.",
                master / 1024.0
            );
        }
        out
    }

    /// What an access log file costs each proxy: CPU per request with it
    /// over CPU per request without, both from this run. The bar for
    /// Switchyard is 1.1×.
    pub fn access_log_cost(&self) -> Vec<(TargetKind, f64)> {
        [TargetKind::Switchyard, TargetKind::Nginx]
            .into_iter()
            .filter_map(|t| {
                let with = self.get(Workload::HttpLog, t)?.proxy_cpu?;
                let without = self.get(Workload::Http, t)?.proxy_cpu?;
                (without > 0.0).then(|| (t, with / without))
            })
            .collect()
    }

    /// Where Switchyard misses the bar: the better of nginx and HAProxy.
    pub fn verdict(&self) -> Vec<String> {
        let mut misses = Vec::new();
        let sy = TargetKind::Switchyard;
        if !self.targets.contains(&sy) {
            return misses;
        }
        for (t, cost) in self.access_log_cost() {
            if t == sy && cost > 1.1 {
                misses.push(format!(
                    "access log to a file: CPU per request {cost:.2}× that without, above the 1.1× bar"
                ));
            }
        }
        for &w in self.workloads {
            let Some(s) = self.get(w, sy) else { continue };
            let others: Vec<(TargetKind, Summary)> = [TargetKind::Nginx, TargetKind::Haproxy]
                .into_iter()
                .filter_map(|t| Some((t, self.get(w, t)?)))
                .collect();
            let best = |f: &dyn Fn(&Summary) -> Option<f64>, higher: bool| {
                others
                    .iter()
                    .filter_map(|(t, o)| Some((*t, f(o)?)))
                    .reduce(|a, b| if (b.1 > a.1) == higher { b } else { a })
            };
            let mut check = |what: &str,
                             mine: Option<f64>,
                             f: &dyn Fn(&Summary) -> Option<f64>,
                             higher: bool,
                             show: &dyn Fn(f64) -> String| {
                if let (Some(m), Some((t, b))) = (mine, best(f, higher)) {
                    let missed = if higher { m < b } else { m > b };
                    if missed {
                        misses.push(format!(
                            "{}: {what} {} vs {t} {} ({:.2}×)",
                            w.title(),
                            show(m),
                            show(b),
                            m / b
                        ));
                    }
                }
            };
            if w == Workload::Hold {
                check(
                    "KiB per held tunnel",
                    s.kib_per_tunnel,
                    &|o| o.kib_per_tunnel,
                    false,
                    &|v| format!("{v:.1}"),
                );
                check(
                    "echo p99 with all tunnels held",
                    s.p99_us,
                    &|o| o.p99_us,
                    false,
                    &|v| ms(Some(v)),
                );
                check(
                    "echo p99 with 1,000 tunnels held",
                    s.p99_1k_us,
                    &|o| o.p99_1k_us,
                    false,
                    &|v| ms(Some(v)),
                );
                if let Some(k) = s.kib_per_tunnel.filter(|k| *k > 4.0) {
                    misses.push(format!(
                        "{}: {k:.1} KiB per held tunnel, above the 4 KiB aim",
                        w.title()
                    ));
                }
                if let (Some(all), Some(k1)) = (s.p99_us, s.p99_1k_us)
                    && all > 2.0 * k1
                {
                    misses.push(format!(
                        "{}: echo p99 {} with all tunnels held is more than 2× the {} at 1,000",
                        w.title(),
                        ms(Some(all)),
                        ms(Some(k1))
                    ));
                }
            } else {
                let unit = w.rate_unit();
                check("throughput", s.rate, &|o| o.rate, true, &|v| {
                    format!("{} {unit}", num(Some(v)))
                });
                check("p99", s.p99_us, &|o| o.p99_us, false, &|v| ms(Some(v)));
                let cpu = w.cpu_unit();
                check("CPU", s.proxy_cpu, &|o| o.proxy_cpu, false, &|v| {
                    format!("{} {cpu}", num(Some(v)))
                });
            }
            if s.errors > 0 {
                misses.push(format!(
                    "{}: {} errors through Switchyard",
                    w.title(),
                    s.errors
                ));
            }
        }
        misses
    }

    /// Every measurement, for the record.
    pub fn log_table(&self) -> String {
        let mut out = String::from(
            "| Round | Workload | Target | Throughput | p99 | Proxy CPU/op | Backend CPU/op | Errors | Notes |\n\
             |--:|---|---|--:|--:|--:|--:|--:|---|\n",
        );
        for s in self.samples {
            let extra = match &s.hold {
                Some(h) => format!(
                    "held {}/{}, {} KiB/tunnel, p99@1k {}; ",
                    h.tunnels_held,
                    h.tunnels_wanted,
                    num(h.kib_per_tunnel()),
                    ms(h.p99_1k_us)
                ),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {}{} |",
                s.round,
                s.workload,
                s.target,
                num(s.rate),
                ms(s.p99_us),
                num(s.proxy_cpu),
                num(s.backend_cpu),
                s.errors,
                extra,
                s.notes.join("; ").replace('|', "/")
            );
        }
        out
    }
}

/// Checks of the helpers, run by `cargo test --benches`.
pub fn self_check() -> Result<(), String> {
    let cases = [
        (median(vec![3.0, 1.0, 2.0]), Some(2.0)),
        (median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5)),
        (median(vec![]), None),
    ];
    for (got, want) in cases {
        if got != want {
            return Err(format!("median: expected {want:?}, got {got:?}"));
        }
    }
    if group(1_234_567) != "1,234,567" || group(999) != "999" {
        return Err("group: wrong thousands separators".into());
    }
    Ok(())
}
