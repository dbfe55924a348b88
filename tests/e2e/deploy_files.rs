//! The deployment files under `deploy/` and the `Dockerfile`, checked the
//! way an operator would before applying them (issue 7): every YAML document
//! loads, every sidekick config they carry passes `sidekick check`, the pods
//! are wired so that sidekick can read what it is told to read (shared
//! volumes, mount paths, the ConfigMap it mounts), and the systemd units pass
//! `systemd-analyze verify` where it is installed.

use serde_json::Value;
use sidekick_e2e::sidekick_bin;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (the parent of `tests/`).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Every `.yaml`/`.yml` file under `deploy/`, sorted.
fn deploy_yaml_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo().join("deploy"), &mut out);
    out.sort();
    out
}

/// The documents of a multi-document YAML text: split on `---` lines;
/// documents holding only comments and blank lines are left out.
fn split_documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line == "---" || line.starts_with("--- ") {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().expect("at least one document");
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.retain(|d| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

/// Every document of `path`, parsed.
fn load_documents(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    split_documents(&text)
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            serde_saphyr::from_str::<Value>(doc).unwrap_or_else(|e| {
                panic!("{} (document {}) does not load: {e}", path.display(), i + 1)
            })
        })
        .collect()
}

/// Kubernetes objects of `deploy/kubernetes/`, by file name.
fn kube_objects(file: &str) -> Vec<Value> {
    load_documents(&repo().join("deploy/kubernetes").join(file))
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

fn array_at<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Runs `sidekick check -c` on `text` (written to a temp file named after
/// `label`), with the variables the configs default left unset; panics with
/// the output unless it exits 0, says `ok`, and warns of nothing.
fn assert_check_passes(label: &str, text: &str) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("sidekick.yaml");
    std::fs::write(&path, text).expect("write the config");
    let out = Command::new(sidekick_bin())
        .args(["check", "-c"])
        .arg(&path)
        .env_remove("OTLP_ENDPOINT")
        .env_remove("SIDEKICK_ENDPOINT")
        .env_remove("DEPLOY_ENV")
        .env_remove("SERVICE_NAME")
        .output()
        .expect("run sidekick check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("sidekick check ({label}): {} {}", out.status, stdout.trim());
    assert!(
        out.status.success() && stdout.trim_end().ends_with(": ok") && stderr.trim().is_empty(),
        "`sidekick check` on the config of {label}: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
}

/// A sidekick config: the YAML that `sidekick run -c` reads.
fn parse_config(label: &str, text: &str) -> Value {
    serde_saphyr::from_str::<Value>(text)
        .unwrap_or_else(|e| panic!("the sidekick config of {label} does not load: {e}"))
}

/// The sidekick configs carried by ConfigMaps: (ConfigMap name, key) → text.
fn configmap_configs() -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for obj in kube_objects("configmap.yaml") {
        assert_eq!(str_at(&obj, "/kind"), "ConfigMap");
        let name = str_at(&obj, "/metadata/name").to_owned();
        let data = obj
            .pointer("/data")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("ConfigMap {name} has no data"));
        for (key, text) in data {
            let text = text
                .as_str()
                .unwrap_or_else(|| panic!("ConfigMap {name}: {key} is not a string"));
            out.insert((name.clone(), key.clone()), text.to_owned());
        }
    }
    out
}

#[test]
fn every_yaml_document_in_deploy_loads() {
    let files = deploy_yaml_files();
    let mut total = 0;
    for f in &files {
        let docs = load_documents(f);
        eprintln!(
            "{}: {} document(s)",
            f.strip_prefix(repo()).unwrap_or(f).display(),
            docs.len()
        );
        assert!(!docs.is_empty(), "{} holds no document", f.display());
        for (i, d) in docs.iter().enumerate() {
            assert!(
                d.is_object(),
                "{} document {} is not a mapping: {d}",
                f.display(),
                i + 1
            );
            if d.get("apiVersion").is_some() {
                str_at(d, "/kind");
                str_at(d, "/metadata/name");
            }
        }
        total += docs.len();
    }
    // Two ConfigMaps, a Deployment, a Job, two systemd configs, the image's
    // default config.
    assert!(total >= 7, "only {total} YAML documents under deploy/");
    assert_eq!(
        split_documents("# c\n---\na: 1\n---\n# only a comment\n---\nb: 2\n").len(),
        2,
        "the document splitter"
    );
}

#[test]
fn every_config_the_deploy_files_carry_passes_sidekick_check() {
    let mut checked = 0;
    for ((name, key), text) in configmap_configs() {
        assert_check_passes(&format!("ConfigMap {name}, key {key}"), &text);
        checked += 1;
    }
    for f in deploy_yaml_files() {
        let docs = load_documents(&f);
        if docs.iter().any(|d| d.get("apiVersion").is_some()) {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read the config");
        assert_check_passes(&f.display().to_string(), &text);
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} configs checked");
    // The check can fail: the same configs with a misspelt key do.
    let out = Command::new(sidekick_bin())
        .args(["check", "-c"])
        .arg({
            let dir = std::env::temp_dir().join(format!("sidekick-deploy-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a temp dir");
            let p = dir.join("bad.yaml");
            let good = std::fs::read_to_string(repo().join("deploy/systemd/sidekick.yaml"))
                .expect("read the unit's config");
            std::fs::write(&p, good.replace("data_dir:", "data_dri:")).expect("write");
            p
        })
        .output()
        .expect("run sidekick check");
    assert_eq!(
        out.status.code(),
        Some(2),
        "a misspelt key must fail the check"
    );
}

/// A container of a pod spec, by name.
fn container<'a>(spec: &'a Value, list: &str, name: &str) -> &'a Value {
    array_at(spec, &format!("/{list}"))
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no {list} entry named {name} in {spec}"))
}

/// `(volume name, mount path, read-only)` of a container's mounts.
fn mounts(c: &Value) -> Vec<(String, String, bool)> {
    array_at(c, "/volumeMounts")
        .iter()
        .map(|m| {
            (
                str_at(m, "/name").to_owned(),
                str_at(m, "/mountPath").trim_end_matches('/').to_owned(),
                m.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
            )
        })
        .collect()
}

/// The mount of `c` that holds `path`.
fn mount_holding(c: &Value, path: &str) -> Option<(String, String, bool)> {
    mounts(c)
        .into_iter()
        .filter(|(_, at, _)| path.starts_with(&format!("{at}/")))
        .max_by_key(|(_, at, _)| at.len())
}

/// The volume named `name` of a pod spec.
fn volume<'a>(spec: &'a Value, name: &str) -> &'a Value {
    array_at(spec, "/volumes")
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no volume named {name}"))
}

/// What every pod running sidekick must get right, whatever the workload:
/// the config it is told to read is the ConfigMap mounted there and passes
/// `sidekick check`; its logs and heartbeat lie on an emptyDir that an app
/// container writes; its data_dir is on a writable volume (the root file
/// system is read-only); the downward-API variables sidekick reads are set;
/// requests and limits are set. Returns sidekick's config.
fn check_pod(what: &str, spec: &Value, sidekick: &Value, apps: &[&Value]) -> Value {
    let args: Vec<&str> = array_at(sidekick, "/args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let config_path = args
        .windows(2)
        .find(|w| w[0] == "-c")
        .map(|w| w[1])
        .unwrap_or_else(|| panic!("{what}: sidekick's args {args:?} name no -c CONFIG"));
    assert_eq!(args.first(), Some(&"run"), "{what}: sidekick's args");
    let (vol, at, _) = mount_holding(sidekick, config_path)
        .unwrap_or_else(|| panic!("{what}: nothing is mounted at {config_path}"));
    let cm = str_at(volume(spec, &vol), "/configMap/name");
    let key = &config_path[at.len() + 1..];
    let text = configmap_configs()
        .remove(&(cm.to_owned(), key.to_owned()))
        .unwrap_or_else(|| panic!("{what}: ConfigMap {cm} has no key {key}"));
    let config = parse_config(what, &text);

    // Every file it is to read is on an emptyDir an app container writes.
    let mut to_read: Vec<String> = array_at(&config, "/logs")
        .iter()
        .flat_map(|l| array_at(l, "/include"))
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    if let Some(hb) = config
        .pointer("/target/heartbeat_file")
        .and_then(Value::as_str)
    {
        to_read.push(hb.to_owned());
    }
    assert!(!to_read.is_empty(), "{what}: sidekick reads no file");
    for path in &to_read {
        let (vol, sidekick_at, _) = mount_holding(sidekick, path)
            .unwrap_or_else(|| panic!("{what}: sidekick reads {path}, which no volume holds"));
        assert!(
            volume(spec, &vol).get("emptyDir").is_some(),
            "{what}: {path} is on volume {vol}, not an emptyDir"
        );
        let writer = apps.iter().find_map(|app| {
            mounts(app)
                .into_iter()
                .find(|(v, _, ro)| *v == vol && !ro)
                .map(|(_, at, _)| at)
        });
        let app_at =
            writer.unwrap_or_else(|| panic!("{what}: no app container writes volume {vol}"));
        eprintln!(
            "{what}: sidekick reads {path} on emptyDir {vol} (at {sidekick_at}; the app has it \
             at {app_at})"
        );
    }

    let data_dir = str_at(&config, "/data_dir");
    let (vol, _, ro) = mount_holding(sidekick, &format!("{data_dir}/x"))
        .unwrap_or_else(|| panic!("{what}: data_dir {data_dir} is on no volume"));
    assert!(!ro, "{what}: data_dir {data_dir} is on a read-only mount");
    assert!(
        volume(spec, &vol).get("emptyDir").is_some(),
        "{what}: data_dir on {vol}"
    );
    assert_eq!(
        sidekick.pointer("/securityContext/readOnlyRootFilesystem"),
        Some(&Value::Bool(true)),
        "{what}: sidekick's root file system"
    );

    // The variables resource.rs reads for k8s.pod.name / k8s.namespace.name
    // (the uses test checks that sidekick turns them into the resource).
    for (var, field) in [
        ("K8S_POD_NAME", "metadata.name"),
        ("K8S_NAMESPACE_NAME", "metadata.namespace"),
    ] {
        let env = array_at(sidekick, "/env")
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(var))
            .unwrap_or_else(|| panic!("{what}: sidekick has no {var}"));
        assert_eq!(
            str_at(env, "/valueFrom/fieldRef/fieldPath"),
            field,
            "{what}: {var}"
        );
    }
    for p in [
        "/resources/requests/memory",
        "/resources/requests/cpu",
        "/resources/limits/memory",
    ] {
        str_at(sidekick, p);
    }
    config
}

#[test]
fn the_deployment_runs_sidekick_as_a_native_sidecar_of_the_app() {
    let objs = kube_objects("deployment.yaml");
    let dep = objs
        .iter()
        .find(|o| str_at(o, "/kind") == "Deployment")
        .expect("a Deployment");
    let spec = dep.pointer("/spec/template/spec").expect("a pod template");
    assert_eq!(
        spec.get("shareProcessNamespace"),
        Some(&Value::Bool(true)),
        "shareProcessNamespace"
    );
    let sidekick = container(spec, "initContainers", "sidekick");
    assert_eq!(
        str_at(sidekick, "/restartPolicy"),
        "Always",
        "a native sidecar is an init container with restartPolicy: Always"
    );
    let apps: Vec<&Value> = array_at(spec, "/containers").iter().collect();
    let config = check_pod("the Deployment", spec, sidekick, &apps);
    // It finds the app's process by its command line (it shares the PID
    // namespace): the regex matches the app container's command.
    let re = str_at(&config, "/target/process_name");
    let command: Vec<&str> = apps
        .iter()
        .flat_map(|a| array_at(a, "/command").iter().chain(array_at(a, "/args")))
        .filter_map(Value::as_str)
        .collect();
    assert!(
        command.join(" ").contains(re.trim_start_matches('^')),
        "target.process_name {re:?} does not match the app's command {command:?}"
    );
    // Its drain fits in the grace period.
    let grace = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(30);
    let drain = str_at(&config, "/shutdown_timeout");
    let drain: u64 = drain
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("shutdown_timeout {drain} in whole seconds"));
    assert!(drain < grace, "shutdown_timeout {drain}s >= grace {grace}s");
}

#[test]
fn the_job_s_sidekick_ends_with_the_app_through_its_heartbeat_file() {
    let objs = kube_objects("job.yaml");
    let job = objs
        .iter()
        .find(|o| str_at(o, "/kind") == "Job")
        .expect("a Job");
    let spec = job.pointer("/spec/template/spec").expect("a pod template");
    assert_eq!(str_at(spec, "/restartPolicy"), "Never");
    let sidekick = container(spec, "containers", "sidekick");
    let apps: Vec<&Value> = array_at(spec, "/containers")
        .iter()
        .filter(|c| c.get("name").and_then(Value::as_str) != Some("sidekick"))
        .collect();
    let config = check_pod("the Job", spec, sidekick, &apps);
    let hb = str_at(&config, "/target/heartbeat_file");
    // The app's command touches and removes that file (same mount path in
    // both containers here).
    let script = apps
        .iter()
        .flat_map(|a| array_at(a, "/command"))
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        script.contains(hb) && script.contains("rm -f"),
        "the Job's app does not keep {hb} (it must touch it and remove it): {script}"
    );
}

/// `KEY=VALUE` lines of a unit file, in order.
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn the_systemd_units_are_hardened_and_verify() {
    let dir = repo().join("deploy/systemd");
    // unit → the repository file installed as its config.
    let units = [
        ("sidekick.service", "sidekick.yaml"),
        ("myapp-wrapped.service", "myapp-wrapped.yaml"),
    ];
    for (unit, config_file) in units {
        let text = std::fs::read_to_string(dir.join(unit)).expect("read the unit");
        let settings = unit_settings(&text);
        let get = |k: &str| {
            settings
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{unit} has no {k}="))
        };
        assert_eq!(get("ProtectSystem"), "strict", "{unit}");
        assert_eq!(get("NoNewPrivileges"), "yes", "{unit}");
        assert!(get("Restart") != "no", "{unit}: Restart=");
        let config = parse_config(
            config_file,
            &std::fs::read_to_string(dir.join(config_file)).expect("read the config"),
        );
        // data_dir is the unit's StateDirectory, so it survives restarts and
        // is the one writable place.
        assert_eq!(
            str_at(&config, "/data_dir"),
            format!("/var/lib/{}", get("StateDirectory")),
            "{unit}: data_dir vs StateDirectory="
        );
        let exec = get("ExecStart");
        assert!(
            exec.starts_with("/usr/local/bin/sidekick run -c /etc/sidekick/"),
            "{unit}: ExecStart={exec}"
        );
        if unit == "sidekick.service" {
            assert!(
                settings.iter().any(|(k, _)| k == "ReadOnlyPaths"),
                "{unit}: ReadOnlyPaths= for the logs"
            );
            let t = config.pointer("/target").expect("a target");
            assert!(
                t.get("process_name").is_some() || t.get("pid_file").is_some(),
                "{unit}: attach by process_name or pid_file"
            );
        } else {
            assert!(exec.contains(" -- "), "{unit}: wrapper ExecStart={exec}");
            assert_eq!(
                get("KillMode"),
                "mixed",
                "{unit}: signals go through sidekick"
            );
        }
    }

    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIPPED: systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    eprintln!(
        "{}",
        String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or_default()
    );
    // `verify` wants the programs of ExecStart= to exist: the units are
    // verified as installed, with sidekick at the path of the binary under
    // test and the example app at /bin/true.
    let tmp = tempfile::tempdir().expect("a temp dir");
    for (unit, _) in units {
        let text = std::fs::read_to_string(dir.join(unit)).expect("read the unit");
        let installed = text
            .replace(
                "/usr/local/bin/sidekick",
                &sidekick_bin().display().to_string(),
            )
            .replace("/usr/bin/myapp", "/bin/true");
        let path = tmp.path().join(unit);
        std::fs::write(&path, installed).expect("write the unit");
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("run systemd-analyze verify");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // verify exits 0 on unknown keys and bad values ("..., ignoring"):
        // any line about the unit is a failure.
        let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains(unit)).collect();
        eprintln!("systemd-analyze verify {unit}: {}", out.status);
        assert!(
            out.status.success() && about_unit.is_empty(),
            "systemd-analyze verify {unit}: {}\n{stderr}",
            out.status
        );
    }
}

#[test]
fn the_dockerfile_runs_sidekick_as_non_root_with_data_dir_on_a_volume() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("read the Dockerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "a multi-stage build: {froms:?}");
    let runtime_at = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM");
    let runtime = &lines[runtime_at..];
    assert!(
        runtime[0].contains("distroless") || runtime[0].contains("scratch"),
        "the runtime stage: {}",
        runtime[0]
    );
    let user = runtime
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER in the runtime stage");
    assert!(
        !(user.starts_with("root") || user.starts_with("0:") || user == "0"),
        "runs as {user}"
    );
    let config = parse_config(
        "deploy/docker/sidekick.yaml",
        &std::fs::read_to_string(repo().join("deploy/docker/sidekick.yaml")).expect("read it"),
    );
    let data_dir = str_at(&config, "/data_dir");
    let volume = runtime
        .iter()
        .find_map(|l| l.strip_prefix("VOLUME "))
        .expect("a VOLUME");
    assert!(
        volume.contains(&format!("\"{data_dir}\"")),
        "VOLUME {volume} is not data_dir {data_dir}"
    );
    // The build stage lays the image out with scripts/image-out.sh (checked
    // below); the runtime stage takes its rootfs as `/` and its data dir,
    // owned by the runtime user, as data_dir's parent.
    let build = &lines[..runtime_at];
    assert!(
        build
            .iter()
            .any(|l| l.contains("scripts/image-out.sh target/release/sidekick /out")),
        "the build stage runs scripts/image-out.sh: {build:?}"
    );
    assert!(
        runtime.contains(&"COPY --from=build /out/rootfs/ /"),
        "the runtime stage copies /out/rootfs/ to /: {runtime:?}"
    );
    let data_parent = Path::new(data_dir)
        .parent()
        .and_then(Path::to_str)
        .expect("data_dir has a parent");
    let data_copy = format!("COPY --from=build --chown={user} /out/data/ {data_parent}/");
    assert!(
        runtime.contains(&data_copy.as_str()),
        "the runtime stage has `{data_copy}`: {runtime:?}"
    );
    // `kubectl exec ... -- sidekick status` (deploy/kubernetes) finds the
    // binary through PATH, which a `scratch` image does not set.
    assert!(
        runtime.iter().any(|l| l
            .strip_prefix("ENV PATH=")
            .is_some_and(|p| p.split(':').any(|d| d == "/usr/local/bin"))),
        "PATH holds /usr/local/bin, where the binary is: {runtime:?}"
    );
    assert!(
        runtime
            .iter()
            .any(|l| l.starts_with("CMD") && l.contains("/etc/sidekick/sidekick.yaml")),
        "CMD reads /etc/sidekick/sidekick.yaml: {runtime:?}"
    );
}

/// Mode bits of `path` (permissions, sticky bit).
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Runs scripts/image-out.sh (what the Dockerfile's build stage runs after
/// `cargo build`) on the test binary and checks the tree it lays out: the
/// files the image needs, and that the binary runs with only the libraries
/// and loader it copied.
#[test]
#[cfg(target_os = "linux")]
fn image_out_lays_out_a_runnable_image_tree() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = dir.path().join("out");
    let status = Command::new("sh")
        .arg(repo().join("scripts/image-out.sh"))
        .arg(sidekick_bin())
        .arg(&out)
        .status()
        .expect("run sh scripts/image-out.sh");
    assert!(status.success(), "scripts/image-out.sh: {status}");
    let rootfs = out.join("rootfs");

    let bin = rootfs.join("usr/local/bin/sidekick");
    assert_eq!(mode(&bin), 0o755, "{}", bin.display());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/sidekick/sidekick.yaml")).expect("the config"),
        std::fs::read_to_string(repo().join("deploy/docker/sidekick.yaml")).expect("read it"),
        "the image's config is deploy/docker/sidekick.yaml"
    );
    assert_eq!(mode(&rootfs.join("tmp")), 0o1777, "/tmp");
    assert!(rootfs.join("var/lib").is_dir(), "/var/lib");
    let config = parse_config(
        "deploy/docker/sidekick.yaml",
        &std::fs::read_to_string(repo().join("deploy/docker/sidekick.yaml")).expect("read it"),
    );
    let data_name = Path::new(str_at(&config, "/data_dir"))
        .file_name()
        .expect("data_dir has a name");
    assert_eq!(mode(&out.join("data").join(data_name)), 0o700, "data_dir");

    // The user the Dockerfile runs as has a name (what `id`, logs and
    // `ps` inside the container show).
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).expect("/etc/passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "/etc/passwd: {passwd}"
    );
    let group = std::fs::read_to_string(rootfs.join("etc/group")).expect("/etc/group");
    assert!(
        group.lines().any(|l| l.starts_with("nonroot:x:65532:")),
        "/etc/group: {group}"
    );

    // Every shared library the binary needs is there: its copied loader,
    // told to look only in the copied library directories, runs it.
    let mut libs = Vec::new();
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read a directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.to_string_lossy().contains(".so") {
                out.push(path);
            }
        }
    }
    walk(&rootfs, &mut libs);
    let (loaders, others): (Vec<PathBuf>, Vec<PathBuf>) = libs.into_iter().partition(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("ld-linux"))
    });
    assert_eq!(loaders.len(), 1, "one loader: {loaders:?}");
    let names: Vec<String> = others
        .iter()
        .map(|p| {
            p.file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("libc.so")),
        "libc among the libraries: {names:?}"
    );
    let mut lib_dirs: Vec<String> = others
        .iter()
        .map(|p| p.parent().expect("a parent").to_string_lossy().into_owned())
        .collect();
    lib_dirs.sort();
    lib_dirs.dedup();
    // The loader would fall back to the host's own directories for a library
    // the copy lacks: every library must resolve inside the tree.
    let list = Command::new(&loaders[0])
        .arg("--inhibit-cache")
        .arg("--library-path")
        .arg(lib_dirs.join(":"))
        .arg("--list")
        .arg(&bin)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run the copied loader --list");
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "ld.so --list: {listed}");
    let rootfs_str = rootfs.to_string_lossy();
    for line in listed.lines() {
        if let Some((_, path)) = line.split_once("=> ") {
            assert!(
                path.starts_with(&*rootfs_str),
                "a library the image lacks: {}\n{listed}",
                line.trim()
            );
        }
    }
    let run = Command::new(&loaders[0])
        .arg("--inhibit-cache")
        .arg("--library-path")
        .arg(lib_dirs.join(":"))
        .arg(&bin)
        .args(["check", "-c"])
        .arg(rootfs.join("etc/sidekick/sidekick.yaml"))
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("OTLP_ENDPOINT")
        .env_remove("SERVICE_NAME")
        .output()
        .expect("run the copied loader");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success() && stdout.trim_end().ends_with(": ok"),
        "the copied sidekick with the copied libraries: {}\nstdout: {stdout}\nstderr: {}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
}
