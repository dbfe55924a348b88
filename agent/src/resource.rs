//! The resource every record is sent with: who is speaking.
//!
//! `host.name`, `service.name` (from `resource:` or `unknown_service:sidekick`),
//! the Kubernetes pod and namespace from the usual environment variables, and
//! every `resource:` entry of the config (which win over detected values).

use sidekick_outputs::Resource;
use sidekick_pipeline::Attr;
use std::collections::BTreeMap;

/// Builds the resource from detected facts and the config's `resource:` map.
pub fn build(configured: &BTreeMap<String, String>) -> Resource {
    let mut attrs: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| {
        if let Some(e) = attrs.iter_mut().find(|(key, _)| key == k) {
            e.1 = v;
        } else {
            attrs.push((k.to_string(), v));
        }
    };
    set("service.name", "unknown_service:sidekick".to_string());
    if let Some(h) = hostname() {
        set("host.name", h);
    }
    for (key, vars) in [
        ("k8s.pod.name", ["K8S_POD_NAME", "POD_NAME"]),
        (
            "k8s.namespace.name",
            ["K8S_NAMESPACE_NAME", "POD_NAMESPACE"],
        ),
        ("k8s.node.name", ["K8S_NODE_NAME", "NODE_NAME"]),
    ] {
        if let Some(v) = vars.iter().find_map(|v| std::env::var(v).ok()) {
            if !v.is_empty() {
                set(key, v);
            }
        }
    }
    for (k, v) in configured {
        set(k, v.clone());
    }
    Resource {
        attributes: attrs.into_iter().map(|(k, v)| Attr::new(k, v)).collect(),
    }
}

fn hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim();
    (!h.is_empty()).then(|| h.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidekick_pipeline::AttrValue;

    fn get<'a>(r: &'a Resource, k: &str) -> Option<&'a AttrValue> {
        r.attributes.iter().find(|a| a.key == k).map(|a| &a.value)
    }

    #[test]
    fn configured_entries_override_detected_ones() {
        let mut m = BTreeMap::new();
        m.insert("service.name".to_string(), "checkout".to_string());
        m.insert("deployment.environment".to_string(), "prod".to_string());
        let r = build(&m);
        assert_eq!(
            get(&r, "service.name"),
            Some(&AttrValue::from("checkout".to_string()))
        );
        assert_eq!(
            get(&r, "deployment.environment"),
            Some(&AttrValue::from("prod".to_string()))
        );
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(
            get(&r, "host.name"),
            Some(&AttrValue::from(host.trim().to_string()))
        );
    }
}
