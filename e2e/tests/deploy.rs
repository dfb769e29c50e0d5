//! The Kubernetes manifests of deploy/kubernetes, checked offline: every
//! resource against the Kubernetes API's schemas (kubernetes-validate,
//! strict: an unknown field fails), the KEDA objects (no schema for them
//! there) by their shape against the queue's stream names, and every
//! variable a container sets against its binary's `--help`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::project_binary;
use yaml_rust2::{Yaml, YamlLoader};

/// The Kubernetes version the manifests are checked against: an old one
/// still served, so that they apply to any current cluster.
const KUBERNETES_VERSION: &str = "1.30.0";

/// Kinds from CRDs (KEDA's), which kubernetes-validate has no schema for;
/// [`the_scaled_object_scales_the_workers_on_every_stream_of_every_shard`]
/// checks them instead.
const CRD_KINDS: [&str; 2] = ["ScaledObject", "TriggerAuthentication"];

/// The queue's defaults (`QUEUE_NAME`, `QUEUE_KEY_PREFIX`) and its consumer
/// group, as redis-job-queue names its keys (src/keys.rs).
const QUEUE_NAME: &str = "weather";
const KEY_PREFIX: &str = "jobs";
const CONSUMER_GROUP: &str = "workers";
/// The stream of each priority lane, after `{prefix}:{tag}:stream`.
const LANES: [&str; 3] = ["", ":high", ":low"];

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate sits in the workspace")
        .join("deploy/kubernetes")
}

fn load(path: &Path) -> Vec<Yaml> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The files kustomization.yaml lists, which must be every other YAML file
/// of the folder.
fn manifest_files() -> Vec<PathBuf> {
    let dir = manifests_dir();
    let kustomization = load(&dir.join("kustomization.yaml")).remove(0);
    let listed: Vec<String> = kustomization["resources"]
        .as_vec()
        .expect("kustomization.yaml lists resources")
        .iter()
        .map(|r| r.as_str().expect("a file name").to_owned())
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed.iter().cloned().collect::<BTreeSet<_>>(),
        present,
        "kustomization.yaml must list every manifest of deploy/kubernetes, once"
    );
    assert_eq!(listed.len(), present.len(), "a manifest is listed twice");
    listed.iter().map(|name| dir.join(name)).collect()
}

/// Every resource of every manifest.
fn resources() -> Vec<Yaml> {
    manifest_files().iter().flat_map(|f| load(f)).collect()
}

fn find<'a>(resources: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    resources
        .iter()
        .find(|r| r["kind"].as_str() == Some(kind) && r["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
}

fn of_kind<'a>(resources: &'a [Yaml], kind: &'a str) -> impl Iterator<Item = &'a Yaml> {
    resources
        .iter()
        .filter(move |r| r["kind"].as_str() == Some(kind))
}

/// Runs kubernetes-validate in strict mode on `files`. Ok: how many
/// resources passed. Err: what failed, including a resource it could not
/// find a schema for (a misspelt `apiVersion` or `kind` is only a warning
/// to it), unless that is one of [`CRD_KINDS`].
fn kubernetes_validate(files: &[PathBuf]) -> Result<usize, String> {
    let out = match Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(files)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "kubernetes-validate is missing: install it with \
             `python3 -m pip install kubernetes-validate` (scripts/test does)"
        ),
        Err(e) => panic!("running kubernetes-validate: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut problems: Vec<&str> = stdout
        .lines()
        .filter(|line| {
            let crd_warning = line.starts_with("WARN ")
                && CRD_KINDS.iter().any(|kind| {
                    line.contains(&format!("for kind {kind} with api version keda.sh/"))
                });
            !line.starts_with("INFO ") && !crd_warning
        })
        .collect();
    let stderr = String::from_utf8_lossy(&out.stderr);
    problems.extend(stderr.lines().filter(|l| !l.trim().is_empty()));
    if !out.status.success() || !problems.is_empty() {
        return Err(format!(
            "kubernetes-validate (exit {:?}):\n{}",
            out.status.code(),
            problems.join("\n")
        ));
    }
    Ok(stdout.lines().filter(|l| l.starts_with("INFO ")).count())
}

#[test]
fn every_manifest_is_valid_for_kubernetes() {
    let files = manifest_files();
    let passed = kubernetes_validate(&files).unwrap_or_else(|e| panic!("{e}"));
    let resources = resources();
    let checked_here = resources
        .iter()
        .filter(|r| CRD_KINDS.contains(&r["kind"].as_str().unwrap_or_default()))
        .count();
    assert_eq!(
        passed + checked_here,
        resources.len(),
        "every resource is validated, by kubernetes-validate or by this file"
    );
}

/// The check above must fail on a broken manifest: a misspelt field, a
/// wrong type, an `apiVersion` no Kubernetes serves.
#[test]
fn kubernetes_validate_rejects_a_broken_manifest() {
    let api = std::fs::read_to_string(manifests_dir().join("api.yaml")).expect("api.yaml");
    let dir = std::env::temp_dir().join(format!("traced-jobs-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    for (name, from, to) in [
        ("misspelt.yaml", "readinessProbe:", "readinesProbe:"),
        (
            "wrong-type.yaml",
            "containerPort: 8080",
            "containerPort: http",
        ),
        (
            "no-such-api.yaml",
            "apiVersion: apps/v1",
            "apiVersion: apps/v2",
        ),
    ] {
        assert!(api.contains(from), "api.yaml has no {from:?} to break");
        let broken = dir.join(name);
        std::fs::write(&broken, api.replacen(from, to, 1)).expect("writing");
        let verdict = kubernetes_validate(&[broken]);
        assert!(verdict.is_err(), "{name} passed: {verdict:?}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `host:port` of each URL in a `REDIS_URL`.
fn redis_addresses(url: &str) -> Vec<String> {
    url.split(',')
        .map(|u| {
            let rest = u.trim().split_once("://").expect("a redis:// URL").1;
            let host_port = rest.split('/').next().unwrap_or_default();
            let host_port = host_port.rsplit('@').next().unwrap_or_default();
            if host_port.contains(':') {
                host_port.to_owned()
            } else {
                format!("{host_port}:6379")
            }
        })
        .collect()
}

#[test]
fn the_scaled_object_scales_the_workers_on_every_stream_of_every_shard() {
    let resources = resources();
    let config = &find(&resources, "ConfigMap", "traced-jobs")["data"];
    let shards: u16 = config["QUEUE_SHARDS"]
        .as_str()
        .expect("QUEUE_SHARDS, a string")
        .parse()
        .expect("QUEUE_SHARDS, a number");
    assert!(shards > 1, "the manifests are for a sharded queue");
    // The streams the workers read, named as the queue names them.
    let expected: BTreeSet<String> = redis_job_queue::shard_tags(QUEUE_NAME, shards)
        .iter()
        .flat_map(|tag| LANES.map(|lane| format!("{KEY_PREFIX}:{{{tag}}}:stream{lane}")))
        .collect();
    assert_eq!(expected.len(), 3 * usize::from(shards));
    let addresses = redis_addresses(config["REDIS_URL"].as_str().expect("REDIS_URL"));
    // KEDA's operator runs in a namespace of its own: a short name would
    // not resolve there.
    let kustomization = load(&manifests_dir().join("kustomization.yaml")).remove(0);
    let namespace = kustomization["namespace"].as_str().expect("a namespace");
    for address in &addresses {
        let host = address
            .rsplit_once(':')
            .map_or(address.as_str(), |(h, _)| h);
        assert!(
            host.ends_with(&format!(".{namespace}.svc"))
                || host.ends_with(&format!(".{namespace}.svc.cluster.local")),
            "{address} is not a name of namespace {namespace} that KEDA can resolve"
        );
    }

    let scaled: Vec<&Yaml> = of_kind(&resources, "ScaledObject").collect();
    assert_eq!(scaled.len(), 1, "one ScaledObject, for the workers");
    let scaled = scaled[0];
    assert_eq!(scaled["apiVersion"].as_str(), Some("keda.sh/v1alpha1"));
    let spec = &scaled["spec"];
    let target = &spec["scaleTargetRef"];
    assert!(
        target["kind"].is_badvalue() || target["kind"].as_str() == Some("Deployment"),
        "it scales a Deployment"
    );
    let worker = find(
        &resources,
        "Deployment",
        target["name"].as_str().expect("scaleTargetRef.name"),
    );
    assert_eq!(
        worker["spec"]["template"]["spec"]["containers"][0]["command"][0].as_str(),
        Some("worker"),
        "the ScaledObject scales the workers"
    );
    assert!(
        worker["spec"]["replicas"].is_badvalue(),
        "KEDA owns the workers' count: `replicas` would reset it on each apply"
    );
    assert!(
        spec["minReplicaCount"].as_i64().is_some_and(|n| n >= 1),
        "a worker must always run: the workers move delayed jobs into the streams"
    );

    let mut streams = Vec::new();
    let mut names = BTreeSet::new();
    for trigger in spec["triggers"].as_vec().expect("triggers") {
        assert_eq!(trigger["type"].as_str(), Some("redis-cluster-streams"));
        let meta = &trigger["metadata"];
        // KEDA's metadata is a map of strings: an unquoted number is refused.
        for (key, value) in meta.as_hash().expect("metadata") {
            assert!(
                value.as_str().is_some(),
                "{key:?} must be a string: {value:?}"
            );
        }
        let stream = meta["stream"].as_str().expect("stream");
        assert_eq!(
            meta["consumerGroup"].as_str(),
            Some(CONSUMER_GROUP),
            "{stream}"
        );
        // The lag (waiting jobs), not the pending entries (running jobs).
        let lag = meta["lagCount"].as_str().expect("lagCount");
        assert!(
            lag.parse::<u32>().is_ok_and(|n| n > 0),
            "{stream}: lagCount {lag}"
        );
        let activation = meta["activationLagCount"]
            .as_str()
            .expect("activationLagCount");
        assert!(activation.parse::<u32>().is_ok(), "{stream}: {activation}");
        for other in ["pendingEntriesCount", "streamLength"] {
            assert!(meta[other].is_badvalue(), "{stream} sets {other}");
        }
        let trigger_addresses: Vec<String> = meta["addresses"]
            .as_str()
            .expect("addresses")
            .split(',')
            .map(|a| a.trim().to_owned())
            .collect();
        assert_eq!(
            trigger_addresses, addresses,
            "{stream}: the services' Redis"
        );
        let auth = trigger["authenticationRef"]["name"]
            .as_str()
            .expect("authenticationRef");
        let auth = find(&resources, "TriggerAuthentication", auth);
        assert!(
            auth["spec"]["secretTargetRef"]
                .as_vec()
                .into_iter()
                .flatten()
                .any(|r| r["parameter"].as_str() == Some("password")),
            "{stream}: the Redis password"
        );
        streams.push(stream.to_owned());
        if let Some(name) = trigger["name"].as_str() {
            names.insert(name.to_owned());
        }
    }
    assert_eq!(
        streams.iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "one trigger per stream of each shard"
    );
    assert_eq!(streams.len(), expected.len(), "a stream has two triggers");

    // The HPA takes the largest metric, not the sum: the lags are added up.
    let modifiers = &spec["advanced"]["scalingModifiers"];
    let formula = modifiers["formula"]
        .as_str()
        .expect("scalingModifiers.formula");
    let terms: BTreeSet<String> = formula.split('+').map(|t| t.trim().to_owned()).collect();
    assert_eq!(
        names.len(),
        streams.len(),
        "every trigger is named, uniquely"
    );
    assert_eq!(terms, names, "the formula adds up every trigger's lag");
    let per_worker = modifiers["target"]
        .as_str()
        .expect("scalingModifiers.target");
    assert!(
        per_worker.parse::<u32>().is_ok_and(|n| n > 0),
        "target {per_worker}"
    );
}

/// A container's binary (its command) and the `--help` text of it.
fn help_of(container: &Yaml) -> (String, String) {
    let binary = container["command"][0]
        .as_str()
        .expect("each container names its binary")
        .to_owned();
    let bin = project_binary(&binary).expect("binary built");
    let help = Command::new(&bin).arg("--help").output().expect("--help");
    (binary, String::from_utf8_lossy(&help.stdout).into_owned())
}

/// Whether `help` lists `key` as a setting (RUST_LOG is read by the log
/// filter and named in the text).
fn reads(help: &str, key: &str) -> bool {
    help.contains(&format!("[env: {key}="))
        || help.contains(&format!("[env: {key}]"))
        || (key == "RUST_LOG" && help.contains("RUST_LOG"))
}

#[test]
fn every_variable_a_container_sets_is_a_setting_of_its_binary() {
    let resources = resources();
    let mut loaders: Vec<(String, String)> = Vec::new();
    for deployment in of_kind(&resources, "Deployment") {
        let name = deployment["metadata"]["name"].as_str().unwrap_or_default();
        for container in deployment["spec"]["template"]["spec"]["containers"]
            .as_vec()
            .expect("containers")
        {
            let (binary, help) = help_of(container);
            for var in container["env"].as_vec().into_iter().flatten() {
                let key = var["name"].as_str().expect("env name");
                assert!(
                    reads(&help, key),
                    "{name} sets {key}, which `{binary} --help` does not list"
                );
            }
            for source in container["envFrom"].as_vec().into_iter().flatten() {
                if let Some(map) = source["configMapRef"]["name"].as_str() {
                    loaders.push((map.to_owned(), help.clone()));
                }
            }
        }
    }
    // A ConfigMap is shared: each of its keys must be read by some binary
    // that loads it (a misspelt one is read by none).
    for config in of_kind(&resources, "ConfigMap") {
        let name = config["metadata"]["name"].as_str().expect("name");
        let helps: Vec<&str> = loaders
            .iter()
            .filter(|(map, _)| map == name)
            .map(|(_, help)| help.as_str())
            .collect();
        assert!(!helps.is_empty(), "no container loads ConfigMap {name}");
        for key in config["data"].as_hash().expect("data").keys() {
            let key = key.as_str().expect("a key");
            assert!(
                helps.iter().any(|help| reads(help, key)),
                "ConfigMap {name} sets {key}, which no binary loading it reads"
            );
        }
    }
}

#[test]
fn probes_and_services_reach_the_port_each_binary_listens_on() {
    let resources = resources();
    for deployment in of_kind(&resources, "Deployment") {
        let name = deployment["metadata"]["name"].as_str().unwrap_or_default();
        let pod = &deployment["spec"]["template"];
        let container = &pod["spec"]["containers"][0];
        let port = &container["ports"][0];
        let (port_name, number) = (
            port["name"].as_str().expect("a named port"),
            port["containerPort"].as_i64().expect("containerPort"),
        );
        // The address the binary is told to listen on.
        let listen = container["env"]
            .as_vec()
            .into_iter()
            .flatten()
            .find(|v| v["name"].as_str().is_some_and(|n| n.ends_with("_LISTEN")))
            .and_then(|v| v["value"].as_str())
            .unwrap_or_else(|| panic!("{name} sets no *_LISTEN"));
        assert_eq!(
            listen.rsplit(':').next().and_then(|p| p.parse().ok()),
            Some(number),
            "{name} listens on {listen}"
        );
        assert!(
            listen.starts_with("0.0.0.0:"),
            "{name}: the kubelet probes the pod's IP"
        );
        for probe in ["readinessProbe", "livenessProbe"] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["port"].as_str(), Some(port_name), "{name}'s {probe}");
            let path = get["path"].as_str().unwrap_or_default();
            // The api alone knows whether Redis answers (/readyz); a
            // liveness probe on it would restart the api for Redis's sake.
            let expected = if name == "api" && probe == "readinessProbe" {
                "/readyz"
            } else {
                "/healthz"
            };
            assert_eq!(path, expected, "{name}'s {probe}");
        }
        let bounds = &container["resources"];
        for bound in ["requests", "limits"] {
            for what in ["cpu", "memory"] {
                assert!(
                    !bounds[bound][what].is_badvalue(),
                    "{name} has no {what} {bound}"
                );
            }
        }
        // Its Service, by the same name, selects it and targets that port.
        let service = find(&resources, "Service", name);
        let selector = service["spec"]["selector"].as_hash().expect("selector");
        for (key, value) in selector {
            assert_eq!(
                &pod["metadata"]["labels"][key.as_str().expect("key")],
                value
            );
        }
        assert_eq!(
            service["spec"]["ports"][0]["targetPort"].as_str(),
            Some(port_name),
            "Service {name}"
        );
    }
}
