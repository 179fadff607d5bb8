//! Container options (`--copt key[=value]`) and how they map to the engine's container
//! settings. Options that give a container power over the host are refused unless berth.toml
//! allows them (`[container] allow_host_access = true`): host namespaces, volumes, privileged,
//! and added capabilities outside Docker's default set. Pure logic.

use std::collections::{BTreeMap, HashMap};

use bollard::models::HostConfig;

/// Options any app may set.
pub const KNOWN: &[&str] = &[
    "cpu-shares",
    "cpus",
    "memory",
    "memory-reservation",
    "memory-swap",
    "pids-limit",
    "shm-size",
    "user",
    "read-only",
    "tmpfs",
    "cap-add",
    "cap-drop",
    "add-host",
    "label",
    "env",
    "init",
    "workdir",
];

/// Options that reach into the host: only with `allow_host_access`.
pub const HOST_ACCESS: &[&str] = &["privileged", "network", "pid", "volume"];

/// Capabilities `cap-add` may add without `allow_host_access`: Docker's default set, which
/// every container already has unless dropped (so adding one back gives no new power).
/// Anything else (SYS_ADMIN, NET_ADMIN, SYS_PTRACE, ALL, ...) needs `allow_host_access`.
pub const HARMLESS_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// A capability name as the engine takes it: upper case, without the `CAP_` prefix.
fn capability_name(cap: &str) -> String {
    let upper = cap.to_ascii_uppercase();
    upper.strip_prefix("CAP_").map(str::to_string).unwrap_or(upper)
}

/// The `cap-add` list, refusing capabilities outside [`HARMLESS_CAPABILITIES`] unless
/// `allow_host_access`.
fn capabilities_to_add(caps: Vec<String>, allow_host_access: bool) -> Result<Vec<String>, String> {
    let caps: Vec<String> = caps.iter().map(|c| capability_name(c)).collect();
    if !allow_host_access {
        let refused: Vec<&str> =
            caps.iter().map(String::as_str).filter(|c| !HARMLESS_CAPABILITIES.contains(c)).collect();
        if !refused.is_empty() {
            return Err(format!(
                "container option cap-add: {} would give the container power over the host and is refused \
                 (allowed: {}); set [container] allow_host_access = true in berth.toml to allow it",
                refused.join(", "),
                HARMLESS_CAPABILITIES.join(", ")
            ));
        }
    }
    Ok(caps)
}

/// The engine settings a set of options produces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerOptions {
    pub host: HostConfigPart,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub labels: HashMap<String, String>,
    pub env: Vec<(String, String)>,
    pub init: Option<bool>,
}

/// The `HostConfig` fields options can set (kept separate so it can be compared and tested).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostConfigPart {
    pub cpu_shares: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub memory: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub memory_swap: Option<i64>,
    pub pids_limit: Option<i64>,
    pub shm_size: Option<i64>,
    pub readonly_rootfs: Option<bool>,
    pub tmpfs: HashMap<String, String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub extra_hosts: Vec<String>,
    pub privileged: Option<bool>,
    pub network_mode: Option<String>,
    pub pid_mode: Option<String>,
    pub binds: Vec<String>,
}

impl HostConfigPart {
    pub fn apply(&self, hc: &mut HostConfig) {
        hc.cpu_shares = self.cpu_shares.or(hc.cpu_shares);
        hc.nano_cpus = self.nano_cpus.or(hc.nano_cpus);
        hc.memory = self.memory.or(hc.memory);
        hc.memory_reservation = self.memory_reservation.or(hc.memory_reservation);
        hc.memory_swap = self.memory_swap.or(hc.memory_swap);
        hc.pids_limit = self.pids_limit.or(hc.pids_limit);
        hc.shm_size = self.shm_size.or(hc.shm_size);
        hc.readonly_rootfs = self.readonly_rootfs.or(hc.readonly_rootfs);
        hc.privileged = self.privileged.or(hc.privileged);
        if !self.tmpfs.is_empty() {
            hc.tmpfs = Some(self.tmpfs.clone());
        }
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        hc.cap_add = list(&self.cap_add).or(hc.cap_add.take());
        hc.cap_drop = list(&self.cap_drop).or(hc.cap_drop.take());
        hc.extra_hosts = list(&self.extra_hosts).or(hc.extra_hosts.take());
        hc.binds = list(&self.binds).or(hc.binds.take());
        if let Some(mode) = &self.network_mode {
            hc.network_mode = Some(mode.clone());
        }
        if let Some(mode) = &self.pid_mode {
            hc.pid_mode = Some(mode.clone());
        }
    }
}

/// Parses options; an unknown option or a bad value is an error naming it.
pub fn parse(options: &BTreeMap<String, String>, allow_host_access: bool) -> Result<ContainerOptions, String> {
    let mut out = ContainerOptions::default();
    for (key, value) in options {
        let value = value.trim();
        let bad = |what: &str| format!("container option {key}: {what}, got {value:?}");
        let int = || value.parse::<i64>().map_err(|_| bad("expected a whole number"));
        let bytes = || parse_bytes(value).ok_or_else(|| bad("expected a size such as 512m or 1g"));
        let flag = || match value {
            "" | "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(bad("expected no value, true or false")),
        };
        let list = || value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect::<Vec<_>>();
        let h = &mut out.host;
        match key.as_str() {
            "cpu-shares" => h.cpu_shares = Some(int()?),
            "cpus" => {
                let cpus: f64 = value.parse().map_err(|_| bad("expected a number of CPUs such as 1.5"))?;
                h.nano_cpus = Some((cpus * 1e9) as i64);
            }
            "memory" => h.memory = Some(bytes()?),
            "memory-reservation" => h.memory_reservation = Some(bytes()?),
            "memory-swap" => h.memory_swap = Some(if value == "-1" { -1 } else { bytes()? }),
            "pids-limit" => h.pids_limit = Some(int()?),
            "shm-size" => h.shm_size = Some(bytes()?),
            "read-only" => h.readonly_rootfs = Some(flag()?),
            "tmpfs" => {
                for item in list() {
                    let (path, opts) = item.split_once(':').unwrap_or((&item, ""));
                    if !path.starts_with('/') {
                        return Err(bad("expected an absolute path, optionally :options"));
                    }
                    h.tmpfs.insert(path.to_string(), opts.to_string());
                }
            }
            "cap-add" => h.cap_add = capabilities_to_add(list(), allow_host_access)?,
            "cap-drop" => h.cap_drop = list(),
            "add-host" => {
                for item in list() {
                    if !item.contains(':') {
                        return Err(bad("expected host:ip"));
                    }
                    h.extra_hosts.push(item);
                }
            }
            "user" if !value.is_empty() => out.user = Some(value.to_string()),
            "workdir" if value.starts_with('/') => out.workdir = Some(value.to_string()),
            "label" | "env" => {
                let (k, v) = value.split_once('=').ok_or_else(|| bad("expected KEY=VALUE"))?;
                if key == "label" {
                    if k.starts_with("berth.") {
                        return Err(bad("labels starting with berth. are berth's own"));
                    }
                    out.labels.insert(k.to_string(), v.to_string());
                } else {
                    out.env.push((k.to_string(), v.to_string()));
                }
            }
            "init" => out.init = Some(flag()?),
            "user" | "workdir" => return Err(bad("expected a value")),
            k if HOST_ACCESS.contains(&k) && !allow_host_access => {
                return Err(format!(
                    "container option {k} gives the container access to the host and is refused; \
                     set [container] allow_host_access = true in berth.toml to allow it"
                ))
            }
            "privileged" => h.privileged = Some(flag()?),
            "network" => h.network_mode = Some(value.to_string()),
            "pid" => h.pid_mode = Some(value.to_string()),
            "volume" => h.binds.push(value.to_string()),
            other => {
                return Err(format!("unknown container option {other} (known options: {})", KNOWN.join(", ")));
            }
        }
    }
    Ok(out)
}

/// `512`, `512k`, `64m`, `1g` (binary units, as Docker reads them).
fn parse_bytes(v: &str) -> Option<i64> {
    let v = v.trim().to_ascii_lowercase();
    let v = v.strip_suffix('b').unwrap_or(&v);
    let (num, mult) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1i64 << 10),
        'm' => (&v[..v.len() - 1], 1 << 20),
        'g' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    let n: f64 = num.parse().ok()?;
    (n >= 0.0).then_some((n * mult as f64) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn maps_options() {
        let o = parse(
            &opts(&[
                ("cpu-shares", "1000"),
                ("cpus", "1.5"),
                ("memory", "512m"),
                ("read-only", ""),
                ("tmpfs", "/tmp:size=64m"),
                ("cap-drop", "ALL"),
                ("label", "team=data"),
                ("user", "1000"),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(o.host.cpu_shares, Some(1000));
        assert_eq!(o.host.nano_cpus, Some(1_500_000_000));
        assert_eq!(o.host.memory, Some(512 << 20));
        assert_eq!(o.host.readonly_rootfs, Some(true));
        assert_eq!(o.host.tmpfs["/tmp"], "size=64m");
        assert_eq!(o.host.cap_drop, vec!["ALL"]);
        assert_eq!(o.labels["team"], "data");
        assert_eq!(o.user.as_deref(), Some("1000"));
        let mut hc = HostConfig::default();
        o.host.apply(&mut hc);
        assert_eq!(hc.cpu_shares, Some(1000));
    }

    #[test]
    fn refuses_unknown_bad_and_host_access() {
        let err = parse(&opts(&[("cpu-sharez", "1")]), false).unwrap_err();
        assert!(err.contains("unknown container option cpu-sharez") && err.contains("cpu-shares"), "{err}");
        assert!(parse(&opts(&[("memory", "lots")]), false).is_err());
        let err = parse(&opts(&[("privileged", "")]), false).unwrap_err();
        assert!(err.contains("allow_host_access"), "{err}");
        assert!(parse(&opts(&[("volume", "/etc:/host-etc")]), false).is_err());
        assert_eq!(parse(&opts(&[("privileged", "")]), true).unwrap().host.privileged, Some(true));
        assert!(parse(&opts(&[("label", "berth.app.id=x")]), false).is_err());
    }

    #[test]
    fn cap_add_is_limited_to_the_default_set_unless_host_access() {
        for caps in ["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "ALL", "CAP_SYS_ADMIN", "sys_module", "CHOWN,NET_ADMIN"] {
            let err = parse(&opts(&[("cap-add", caps)]), false).unwrap_err();
            assert!(err.contains("cap-add") && err.contains("allow_host_access"), "{caps}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
        let err = parse(&opts(&[("cap-add", "CHOWN,SYS_ADMIN,SYS_PTRACE")]), false).unwrap_err();
        assert!(err.contains("cap-add: SYS_ADMIN, SYS_PTRACE would"), "only the refused ones are named: {err}");
        let o = parse(&opts(&[("cap-add", "NET_BIND_SERVICE, cap_chown,KILL")]), false).unwrap();
        assert_eq!(o.host.cap_add, vec!["NET_BIND_SERVICE", "CHOWN", "KILL"]);
        for cap in HARMLESS_CAPABILITIES {
            assert!(parse(&opts(&[("cap-add", cap)]), false).is_ok(), "{cap}");
        }
        let o = parse(&opts(&[("cap-add", "SYS_ADMIN,NET_ADMIN,SYS_PTRACE")]), true).unwrap();
        assert_eq!(o.host.cap_add, vec!["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE"]);
        // Dropping is always allowed: it only takes power away.
        assert!(parse(&opts(&[("cap-drop", "ALL")]), false).is_ok());
    }
}
