//! Fills the test apps' maps from a JSON configuration (the layout of
//! testdata/packets/config.json): one section per app, written into the
//! maps the app declares (C structs in testdata/apps/*.bpf.c).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, MapFlags};
use serde_json::Value;

use crate::object::Loaded;

fn field<'a>(v: &'a Value, path: &str, k: &str) -> Result<&'a Value> {
    v.get(k).with_context(|| format!("{path}: missing {k:?}"))
}

fn ipv4(v: &Value, path: &str, k: &str) -> Result<[u8; 4]> {
    let s = field(v, path, k)?
        .as_str()
        .with_context(|| format!("{path}.{k}: not a string"))?;
    let a: Ipv4Addr = s
        .parse()
        .with_context(|| format!("{path}.{k}: bad IPv4 {s:?}"))?;
    Ok(a.octets())
}

fn int(v: &Value, path: &str, k: &str) -> Result<u64> {
    field(v, path, k)?
        .as_u64()
        .with_context(|| format!("{path}.{k}: not an unsigned integer"))
}

fn mac(v: &Value, path: &str, k: &str) -> Result<[u8; 6]> {
    let s = field(v, path, k)?
        .as_str()
        .with_context(|| format!("{path}.{k}: not a string"))?;
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("{path}.{k}: bad MAC {s:?}");
    }
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).with_context(|| format!("{path}.{k}: bad MAC {s:?}"))?;
    }
    Ok(m)
}

fn update(l: &Loaded, map: &str, key: &[u8], val: &[u8]) -> Result<()> {
    l.map(map)?
        .update(key, val, MapFlags::ANY)
        .with_context(|| format!("updating map {map}"))
}

/// The maps each app's section fills.
const APP_MAPS: [(&str, &[&str]); 5] = [
    ("drop", &[]),
    ("cms", &[]),
    ("nat", &["nat_config"]),
    ("router", &["routes_v4", "routes_v6"]),
    ("tunnel", &["tunnel_config"]),
];

/// Refuses an `--app` whose maps the object does not have, naming the app
/// that would fit (the usual mistake: the section of another app).
fn check_fits(l: &Loaded, app: &str) -> Result<()> {
    let Some((_, want)) = APP_MAPS.iter().find(|(a, _)| *a == app) else {
        bail!("--app {app:?}: known apps are drop, cms, nat, router, tunnel");
    };
    let has: Vec<String> = l
        .obj
        .maps()
        .map(|m| m.name().to_string_lossy().into_owned())
        .collect();
    let missing: Vec<&str> = want
        .iter()
        .copied()
        .filter(|m| !has.iter().any(|h| h == m))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let fits: Vec<&str> = APP_MAPS
        .iter()
        .filter(|(_, ms)| !ms.is_empty() && ms.iter().all(|m| has.iter().any(|h| h == m)))
        .map(|(a, _)| *a)
        .collect();
    bail!(
        "--app {app} does not fit this object: it fills {} {}, which the object does not have{}",
        if missing.len() == 1 { "map" } else { "maps" },
        missing.join(", "),
        match fits.as_slice() {
            [] => String::new(),
            f => format!(" (its maps are those of --app {})", f.join(" or --app ")),
        }
    );
}

/// Applies section `app` (the `_sub` suffix is ignored) of the file.
pub fn populate(l: &Loaded, file: &Path, app: &str) -> Result<()> {
    check_fits(l, app.strip_suffix("_sub").unwrap_or(app))?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let root: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
    let app = app.strip_suffix("_sub").unwrap_or(app);
    let zero = 0u32.to_ne_bytes();
    match app {
        "drop" | "cms" => {}
        "nat" => {
            let c = field(&root, "", "nat")?;
            let mut v = Vec::new();
            v.extend(ipv4(c, "nat", "external_ip")?);
            v.extend(ipv4(c, "nat", "internal_net")?);
            v.extend(ipv4(c, "nat", "internal_mask")?);
            v.extend((int(c, "nat", "port_min")? as u16).to_ne_bytes());
            v.extend((int(c, "nat", "port_max")? as u16).to_ne_bytes());
            update(l, "nat_config", &zero, &v)?;
        }
        "router" => {
            let c = field(&root, "", "router")?;
            for (map, v6) in [("routes_v4", false), ("routes_v6", true)] {
                let routes = field(c, "router", map)?
                    .as_array()
                    .with_context(|| format!("router.{map}: not a list"))?;
                for r in routes {
                    let p = field(r, map, "prefix")?
                        .as_str()
                        .context("prefix: not a string")?;
                    let (a, len) = p
                        .split_once('/')
                        .with_context(|| format!("{map}: bad prefix {p:?}"))?;
                    let len: u32 = len
                        .parse()
                        .with_context(|| format!("{map}: bad prefix {p:?}"))?;
                    let a: IpAddr = a
                        .parse()
                        .with_context(|| format!("{map}: bad prefix {p:?}"))?;
                    let mut key = len.to_ne_bytes().to_vec();
                    match (a, v6) {
                        (IpAddr::V4(a), false) => key.extend(a.octets()),
                        (IpAddr::V6(a), true) => key.extend(a.octets()),
                        _ => bail!("{map}: prefix {p} of the wrong family"),
                    }
                    let mut val = (int(r, map, "ifindex")? as u32).to_ne_bytes().to_vec();
                    val.extend(mac(r, map, "dmac")?);
                    val.extend(mac(r, map, "smac")?);
                    update(l, map, &key, &val)?;
                }
            }
        }
        "tunnel" => {
            let c = field(&root, "", "tunnel")?;
            let mut v = Vec::new();
            v.extend(ipv4(c, "tunnel", "local_ip")?);
            v.extend(ipv4(c, "tunnel", "remote_ip")?);
            v.extend(mac(c, "tunnel", "dmac")?);
            v.extend(mac(c, "tunnel", "smac")?);
            v.extend([int(c, "tunnel", "ttl")? as u8, 0, 0, 0]);
            update(l, "tunnel_config", &zero, &v)?;
        }
        other => bail!("--app {other:?}: known apps are drop, cms, nat, router, tunnel"),
    }
    Ok(())
}
