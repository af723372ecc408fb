//! The container image, built from the Dockerfile as it is and run for real under podman: a
//! master container, the relay container configured only through its `REPLICA_RELAY_*`
//! environment (as the manifests configure it), two replica containers through it; the
//! sidecar pod of deploy/kubernetes started with `podman kube play`; the Sentinel and the
//! Redis Cluster deployments beside real master sets and clusters of server containers. The images they start
//! FROM come from a registry or, where none is reachable, from `scripts/container-images`,
//! which `scripts/test` runs first.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use support::wait_for;

const IMAGE: &str = "localhost/replica-relay:test";
const REDIS: &str = "docker.io/library/redis:7.2";
const BASES: [&str; 3] = [
    "docker.io/library/debian:bookworm-slim",
    "docker.io/library/rust:1.95-slim-bookworm",
    REDIS,
];

/// The container tests run one at a time: on 2 cores, builds and three sets of containers at
/// once would only make each slower.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .output()
        .expect("podman runs")
}

/// Runs podman and returns its trimmed stdout; fails the test with podman's stderr.
fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The image, built once per run with `podman build --format docker` (podman's default OCI
/// format drops HEALTHCHECK); `None` (a failure under CI) without podman or the base images.
fn image() -> Option<&'static str> {
    static BUILT: OnceLock<bool> = OnceLock::new();
    let built = *BUILT.get_or_init(|| {
        let ready = Command::new("podman").arg("--version").output().is_ok()
            && BASES
                .iter()
                .all(|b| podman(&["image", "exists", b]).status.success());
        if !ready {
            support::missing("podman and the base images (run scripts/container-images)");
            return false;
        }
        let started = Instant::now();
        let dir = env!("CARGO_MANIFEST_DIR");
        podman_ok(&["build", "--format", "docker", "-q", "-t", IMAGE, dir]);
        let size: u64 = podman_ok(&["image", "inspect", "--format", "{{.Size}}", IMAGE])
            .parse()
            .unwrap();
        report(&format!(
            "image {IMAGE}: built in {:.0} s, {:.1} MB",
            started.elapsed().as_secs_f64(),
            size as f64 / 1e6
        ));
        true
    });
    built.then_some(IMAGE)
}

/// A fact printed, not asserted (image size, start-up time): to stderr, and to
/// target/tmp/containers.txt, which scripts/test prints after the tests.
fn report(line: &str) {
    eprintln!("{line}");
    let dir = repo().join("target/tmp");
    let _ = std::fs::create_dir_all(&dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("containers.txt"));
    if let Ok(mut f) = file {
        let _ = writeln!(f, "{line}");
    }
}

/// Containers and a network of one test, removed when it ends, however it ends.
struct Lab {
    prefix: String,
    network: String,
    names: Vec<String>,
    volumes: Vec<String>,
}

impl Lab {
    fn new(test: &str) -> Lab {
        let prefix = format!("rr-{test}-{}", std::process::id());
        let network = format!("{prefix}-net");
        let subnet = format!("{}.0/24", Lab::net_of(std::process::id()));
        podman_ok(&["network", "create", "--subnet", &subnet, &network]);
        Lab {
            prefix,
            network,
            names: Vec::new(),
            volumes: Vec::new(),
        }
    }

    /// The first three parts of the lab's subnet, away from podman's own 10.88 and 10.89.
    fn net_of(pid: u32) -> String {
        format!("10.{}.{}", 120 + pid % 100 / 25, pid % 250)
    }

    /// A fixed address on the lab's network: a container that restarts keeps it, and whoever
    /// connects to it needs no DNS, whose answers stall for the resolver's whole timeout while
    /// podman's DNS server has no entry for a name (as during `podman restart`).
    fn address(&self, host: u8) -> String {
        format!("{}.{host}", Lab::net_of(std::process::id()))
    }

    /// A fixed MAC address to go with it: a restarted container gets a new virtual interface,
    /// and peers whose ARP cache still holds the old one's address send into nothing until the
    /// entry goes stale (a replica's connect to the restarted relay hung for 30 s, seen in CI).
    fn mac(&self, host: u8) -> String {
        let pid = std::process::id();
        format!(
            "02:72:72:{:02x}:{:02x}:{host:02x}",
            (pid >> 8) as u8,
            pid as u8
        )
    }

    /// Starts a detached container `name` on the lab's network; the others reach it by its
    /// full name (returned), unique to the test.
    fn run(&mut self, name: &str, opts: &[&str], image: &str, args: &[&str]) -> String {
        let full = format!("{}-{name}", self.prefix);
        let mut argv = vec!["run", "-d", "--name", &full, "--network", &self.network];
        argv.extend_from_slice(opts);
        argv.push(image);
        argv.extend_from_slice(args);
        podman_ok(&argv);
        self.names.push(full.clone());
        full
    }

    fn volume(&mut self, name: &str) -> String {
        let full = format!("{}-{name}", self.prefix);
        podman_ok(&["volume", "create", &full]);
        self.volumes.push(full.clone());
        full
    }

    /// `redis-cli` inside container `name`, against its own server.
    fn cli(&self, name: &str, password: &str, args: &[&str]) -> String {
        let mut argv = vec!["exec", name, "redis-cli", "--no-auth-warning"];
        if !password.is_empty() {
            argv.extend_from_slice(&["-a", password]);
        }
        argv.extend_from_slice(args);
        let out = podman(&argv);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in &self.names {
                let logs = podman(&["logs", "--tail", "40", name]);
                eprintln!(
                    "--- {name}:\n{}{}",
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
        }
        for name in &self.names {
            let _ = podman(&["rm", "-f", "-t", "0", name]);
        }
        for v in &self.volumes {
            let _ = podman(&["volume", "rm", "-f", v]);
        }
        let _ = podman(&["network", "rm", "-f", &self.network]);
    }
}

fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

#[test]
fn the_image_relays_for_real_and_a_restart_resumes_partially() {
    let _serial = serial();
    let Some(image) = image() else { return };
    let mut lab = Lab::new("image");
    let debug = ["--enable-debug-command", "yes", "--save", ""];
    let master = lab.run(
        "master",
        &[],
        REDIS,
        &[&["--requirepass", "master-pw"][..], &debug].concat(),
    );
    lab.cli(
        &master,
        "master-pw",
        &["DEBUG", "POPULATE", "20000", "k", "100"],
    );
    let data = lab.volume("relay-data");
    let started = Instant::now();
    let (relay_ip, relay_mac) = (lab.address(10), lab.mac(10));
    let relay = lab.run(
        "relay",
        &[
            "--ip",
            &relay_ip,
            "--mac-address",
            &relay_mac,
            "-v",
            &format!("{data}:/data"),
            "-e",
            &format!("REPLICA_RELAY_REPLICAOF={master} 6379"),
            "-e",
            "REPLICA_RELAY_MASTERAUTH=master-pw",
            "-e",
            "REPLICA_RELAY_REQUIREPASS=relay-pw",
        ],
        image,
        &[],
    );
    wait_for("the relay's healthcheck to pass", || {
        let out = podman(&["healthcheck", "run", &relay]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    });
    report(&format!(
        "relay container healthy {:.1} s after podman run",
        started.elapsed().as_secs_f64()
    ));
    let user = podman_ok(&["inspect", "--format", "{{.Config.User}}", &relay]);
    assert_eq!(user, "10001:10001");
    let relay_info = |lab: &Lab, section: &str| {
        let argv = [
            "-h", &relay_ip, "-p", "6380", "-a", "relay-pw", "INFO", section,
        ];
        lab.cli(&master, "", &argv)
    };
    wait_for("the relay's link to the master", || {
        let info = relay_info(&lab, "replication");
        let up = info_field(&info, "master_link_status").as_deref() == Some("up");
        (up, info)
    });
    let owner = podman_ok(&["exec", &relay, "stat", "-c", "%u", "/data/identity"]);
    assert_eq!(
        owner, "10001",
        "the store on the volume belongs to the relay's user"
    );

    let replica_args = [
        &["--replicaof", &relay_ip, "6380", "--masterauth", "relay-pw"][..],
        &debug,
    ]
    .concat();
    let replicas: Vec<String> = (1..=2)
        .map(|i| lab.run(&format!("replica{i}"), &[], REDIS, &replica_args))
        .collect();
    let digests_agree = |lab: &Lab| {
        let want = lab.cli(&master, "master-pw", &["DEBUG", "DIGEST"]);
        let got: Vec<String> = replicas
            .iter()
            .map(|r| lab.cli(r, "", &["DEBUG", "DIGEST"]))
            .collect();
        (
            got.iter().all(|g| *g == want) && want.len() == 40,
            (want, got),
        )
    };
    wait_for("both replicas to hold the master's data", || {
        digests_agree(&lab)
    });

    podman_ok(&["restart", "-t", "10", &relay]);
    lab.cli(&master, "master-pw", &["SET", "after-restart", "1"]);
    wait_for("the replicas to follow after the relay's restart", || {
        digests_agree(&lab)
    });
    let stats = lab.cli(&master, "master-pw", &["INFO", "stats"]);
    assert_eq!(
        info_field(&stats, "sync_full").as_deref(),
        Some("1"),
        "{stats}"
    );
    assert_eq!(
        info_field(&stats, "sync_partial_ok").as_deref(),
        Some("1"),
        "{stats}"
    );
    let relay_stats = relay_info(&lab, "stats");
    assert_eq!(
        info_field(&relay_stats, "sync_full").as_deref(),
        Some("0"),
        "{relay_stats}"
    );
    assert_eq!(
        info_field(&relay_stats, "sync_partial_ok").as_deref(),
        Some("2"),
        "{relay_stats}"
    );
}

/// `scripts/check-deploy`'s virtualenv: kubectl, and a Python with PyYAML.
fn tools() -> Option<PathBuf> {
    let venv = std::env::var_os("REPLICA_RELAY_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/replica-relay-tools")
        });
    let bin = venv.join("bin");
    if bin.join("kubectl").exists() && bin.join("python").exists() {
        return Some(bin);
    }
    support::missing("kubectl and PyYAML (scripts/check-deploy installs them)");
    None
}

/// A value of the stringData of `file`, a Secret under deploy/.
fn secret(file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")));
    line.unwrap().trim().to_string()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A GET on 127.0.0.1:`port`; `None` while nothing answers.
fn try_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        text.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    ))
}

/// `kubectl kustomize` of `dir` (under the repository), written to `work`/rendered-<name>.yaml.
fn kustomize(tools: &std::path::Path, dir: &str, work: &std::path::Path) -> PathBuf {
    let rendered = Command::new(tools.join("kubectl"))
        .args(["kustomize", repo().join(dir).to_str().unwrap()])
        .output()
        .unwrap();
    assert!(rendered.status.success(), "kubectl kustomize {dir}");
    let name = dir.rsplit('/').next().unwrap();
    let file = work.join(format!("rendered-{name}.yaml"));
    std::fs::write(&file, &rendered.stdout).unwrap();
    file
}

/// `scripts/kube-play-pods INPUT OUT ARGS...`: what `podman kube play` runs, in `out`.
fn kube_play_pods(
    tools: &std::path::Path,
    input: &std::path::Path,
    out: &std::path::Path,
    args: &[String],
) -> PathBuf {
    let converted = Command::new(tools.join("python"))
        .arg(repo().join("scripts/kube-play-pods"))
        .arg(input)
        .arg(out)
        .args(args)
        .status()
        .unwrap();
    assert!(converted.success(), "kube-play-pods {args:?}");
    out.to_path_buf()
}

/// Pods started by `podman kube play`, with their volumes and secrets, taken down at the end.
struct Played {
    file: PathBuf,
    volumes: Vec<String>,
    secrets: Vec<String>,
}

impl Played {
    /// Creates the secrets of `out/secrets` and plays `out/play.yaml` with podman's `options`
    /// (a network and an address).
    fn play(out: &std::path::Path, options: &[&str]) -> Played {
        let mut secrets = Vec::new();
        for entry in std::fs::read_dir(out.join("secrets")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            // A secret that is still there after `rm` is in use by pods of an earlier play of
            // the same manifests: theirs, made from the same file.
            let _ = podman(&["secret", "rm", &name]);
            if podman(&["secret", "inspect", &name]).status.success() {
                continue;
            }
            podman_ok(&["secret", "create", &name, path.to_str().unwrap()]);
            secrets.push(name);
        }
        let file = out.join("play.yaml");
        let text = std::fs::read_to_string(&file).unwrap();
        let volumes = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("claimName: "))
            .map(str::to_string)
            .collect();
        let played = Played {
            file,
            volumes,
            secrets,
        };
        let file = played.file.to_str().unwrap();
        podman_ok(&[&["kube", "play", "--replace"][..], options, &[file]].concat());
        played
    }
}

impl Drop for Played {
    fn drop(&mut self) {
        let _ = podman(&["kube", "down", self.file.to_str().unwrap()]);
        for v in &self.volumes {
            let _ = podman(&["volume", "rm", "-f", v]);
        }
        for s in &self.secrets {
            let _ = podman(&["secret", "rm", s]);
        }
    }
}

/// The sidecar pod of deploy/kubernetes, rendered by `kubectl kustomize` and started with
/// `podman kube play`. podman 4.3 has no StatefulSet, no `$(VAR)` in args and its own form of
/// secrets: `scripts/kube-play-pods` turns the StatefulSet into its pod 0, expands the args as
/// the kubelet does, and the Secret into a podman secret.
#[test]
fn the_sidecar_pod_of_deploy_kubernetes_runs_under_kube_play() {
    let _serial = serial();
    let Some(image) = image() else { return };
    let Some(tools) = tools() else { return };
    podman_ok(&["tag", image, "localhost/replica-relay:0.1.0"]);
    let work = tempfile::tempdir().unwrap();
    let rendered = kustomize(&tools, "deploy/kubernetes", work.path());
    // Every port on a free one of the host's: podman publishes a containerPort without a
    // hostPort on the same port, which another test (or server) may hold.
    let metrics = support::free_port();
    let ports = [
        ("metrics", metrics),
        ("relay", support::free_port()),
        ("redis", support::free_port()),
    ];
    let mut args = vec!["--only".to_string(), "redis-master".to_string()];
    for (name, port) in ports {
        args.extend(["--host-port".to_string(), format!("{name}={port}")]);
    }
    let out = kube_play_pods(&tools, &rendered, &work.path().join("play"), &args);
    let _pod = Played::play(&out, &[]);

    let ready = wait_for("/readyz to turn ready", || {
        let got = try_get(metrics, "/readyz");
        (got.as_ref().is_some_and(|(status, _)| *status == 200), got)
    });
    assert_eq!(
        ready.map(|r| r.1.trim().to_string()).as_deref(),
        Some("ready")
    );
    let cli = |port: &str, password: &str, args: &[&str]| {
        let mut argv = vec![
            "exec",
            "redis-master-0-redis",
            "redis-cli",
            "--no-auth-warning",
            "-p",
            port,
        ];
        if !password.is_empty() {
            argv.extend_from_slice(&["-a", password]);
        }
        argv.extend_from_slice(args);
        String::from_utf8_lossy(&podman(&argv).stdout)
            .trim()
            .to_string()
    };
    let file = "deploy/kubernetes/secret.yaml";
    let (master_pw, relay_pw) = (
        secret(file, "master-password"),
        secret(file, "relay-password"),
    );
    let info = cli("6380", &relay_pw, &["INFO", "replication"]);
    assert_eq!(
        info_field(&info, "master_host").as_deref(),
        Some("127.0.0.1"),
        "{info}"
    );
    assert_eq!(
        info_field(&info, "master_link_status").as_deref(),
        Some("up"),
        "{info}"
    );
    assert!(
        cli("6379", "", &["PING"]).contains("NOAUTH"),
        "the master asks for its password"
    );
    assert_eq!(cli("6379", &master_pw, &["PING"]), "PONG");
    assert!(
        cli("6380", "", &["PING"]).contains("NOAUTH"),
        "the relay asks for its password"
    );

    // The init container copied the master image's server for the compactor, and the relay
    // found it where the manifest says. (The stand-in image's server is Debian's, linked to
    // libraries the relay's image does not have, so a compaction here would fall back to the
    // master: the compaction itself is tested outside containers, tests/compactor.rs.)
    let relay_info = cli("6380", &relay_pw, &["INFO", "relay"]);
    assert_eq!(
        info_field(&relay_info, "relay_snapshot_source").as_deref(),
        Some("local"),
        "{relay_info}"
    );
    let relay = "redis-master-0-replica-relay";
    let readonly = podman_ok(&[
        "inspect",
        "--format",
        "{{.HostConfig.ReadonlyRootfs}}",
        relay,
    ]);
    assert_eq!(readonly, "true");
    let write = podman(&["exec", relay, "touch", "/probe"]);
    assert!(!write.status.success(), "the root filesystem is read-only");
    let owner = podman_ok(&["exec", relay, "stat", "-c", "%u", "/data/identity"]);
    assert_eq!(
        owner, "10001",
        "the store is on the relay's volume, as its user"
    );
}

/// A Sentinel-managed master set of the lab: master `a`, its replica `b` and one Sentinel
/// (quorum 1) monitoring `a` as "mymaster", all with `password`, at fixed addresses .10, .11
/// and .20. Returns the names of the master's and the replica's containers.
fn sentinel_set(lab: &mut Lab, password: &str, conf: &std::path::Path) -> [String; 2] {
    let server = [
        "--requirepass",
        password,
        "--masterauth",
        password,
        "--enable-debug-command",
        "yes",
        "--save",
        "",
    ];
    let at = |lab: &Lab, host: u8| {
        let (ip, mac) = (lab.address(host), lab.mac(host));
        ["--ip".to_string(), ip, "--mac-address".to_string(), mac]
    };
    let opts = at(lab, 10);
    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    let a = lab.run("a", &opts, REDIS, &server);
    let a_ip = lab.address(10);
    let opts = at(lab, 11);
    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    let b_args = [&server[..], &["--replicaof", &a_ip, "6379"]].concat();
    let b = lab.run("b", &opts, REDIS, &b_args);
    // Sentinel rewrites its configuration file: it lives in a directory of the test's.
    std::fs::write(
        conf.join("sentinel.conf"),
        format!(
            "port 26379\nprotected-mode no\nrequirepass {password}\n\
             sentinel monitor mymaster {a_ip} 6379 1\n\
             sentinel auth-pass mymaster {password}\n\
             sentinel down-after-milliseconds mymaster 5000\n\
             sentinel failover-timeout mymaster 20000\n"
        ),
    )
    .unwrap();
    let mut opts = at(lab, 20).to_vec();
    opts.extend([
        "-v".to_string(),
        format!("{}:/conf", conf.display()),
        "--entrypoint".to_string(),
        "redis-server".to_string(),
    ]);
    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    lab.run(
        "sentinel",
        &opts,
        REDIS,
        &["/conf/sentinel.conf", "--sentinel"],
    );
    [a, b]
}

/// The Sentinel deployments: the relay of deploy/kubernetes-sentinel and the one of the Bitnami
/// chart's Sentinel values (its extraDeploy, rendered for release "my-redis"), each its own pod
/// started with `podman kube play` beside a master set run by a real Sentinel. The relay finds
/// the master through the Sentinel's Service name (a hostAliases entry here: podman has no DNS
/// for Services), a replica pod syncs through it, and a failover moves the relay to the new
/// master with a partial resync: no full sync on the new master, the replica's data follows.
#[test]
fn the_sentinel_deployments_find_the_master_and_follow_a_failover() {
    let _serial = serial();
    let Some(image) = image() else { return };
    let Some(tools) = tools() else { return };
    podman_ok(&["tag", image, "localhost/replica-relay:0.1.0"]);
    let password = secret("deploy/kubernetes-sentinel/secret.yaml", "redis-password");
    let work = tempfile::tempdir().unwrap();
    let conf = work.path().join("sentinel");
    std::fs::create_dir(&conf).unwrap();
    let mut lab = Lab::new("sentinel");
    let [a, b] = sentinel_set(&mut lab, &password, &conf);
    lab.cli(&a, &password, &["DEBUG", "POPULATE", "20000", "k", "100"]);
    let (a_ip, b_ip) = (lab.address(10), lab.address(11));
    let (sentinel_ip, relay_ip, helm_ip) = (lab.address(20), lab.address(30), lab.address(31));

    let rendered = kustomize(&tools, "deploy/kubernetes-sentinel", work.path());
    let host_port = |name: &str| {
        vec![
            "--host-port".to_string(),
            format!("{name}={}", support::free_port()),
        ]
    };
    let relay_args = [
        vec!["--only".into(), "replica-relay".into()],
        vec!["--host".into(), format!("redis-sentinel={sentinel_ip}")],
        host_port("relay"),
        host_port("metrics"),
    ]
    .concat();
    let out = kube_play_pods(&tools, &rendered, &work.path().join("relay"), &relay_args);
    let _relay = Played::play(&out, &["--network", &lab.network, "--ip", &relay_ip]);
    let replica_args = [
        vec!["--only".into(), "redis-replica".into()],
        vec!["--host".into(), format!("replica-relay={relay_ip}")],
        vec!["--extra-arg".into(), "redis=--enable-debug-command".into()],
        vec!["--extra-arg".into(), "redis=local".into()],
        host_port("redis"),
    ]
    .concat();
    let out = kube_play_pods(
        &tools,
        &rendered,
        &work.path().join("replica"),
        &replica_args,
    );
    let _replica = Played::play(&out, &["--network", &lab.network]);
    let replica = "redis-replica-0-redis".to_string();

    let info_of = |lab: &Lab, host: &str, section: &str| {
        let argv = ["-h", host, "-p", "6380", "-a", &password, "INFO", section];
        lab.cli(&replica, "", &argv)
    };
    let following = |lab: &Lab, relay: &str, master: &str| {
        let info = info_of(lab, relay, "replication");
        let at = info_field(&info, "master_host").as_deref() == Some(master)
            && info_field(&info, "master_link_status").as_deref() == Some("up");
        (at, info)
    };
    wait_for(
        "the relay to attach to the master the Sentinel names",
        || following(&lab, &relay_ip, &a_ip),
    );
    let relay_info = info_of(&lab, &relay_ip, "relay");
    assert_eq!(
        info_field(&relay_info, "relay_snapshot_source").as_deref(),
        Some("local"),
        "the init container gave the relay the set's server: {relay_info}"
    );
    let synced = |lab: &Lab, master: &str| {
        let want = lab.cli(master, &password, &["DEBUG", "DIGEST"]);
        let got = lab.cli(&replica, "", &["DEBUG", "DIGEST"]);
        (want == got && want.len() == 40, (want, got))
    };
    wait_for("the replica pod to hold the master's data", || {
        synced(&lab, &a)
    });

    // The master fails (as in production: Sentinel's own FAILOVER with the master still up
    // lets the old master take writes after the promotion, and every replica of it, the relay
    // as much as any, then needs a full sync). Its replica holds all it sent first.
    wait_for("the master's replica to hold all the master sent", || {
        let offsets = [&a, &b].map(|s| {
            info_field(
                &lab.cli(s, &password, &["INFO", "replication"]),
                "master_repl_offset",
            )
        });
        (offsets[0].is_some() && offsets[0] == offsets[1], offsets)
    });
    podman_ok(&["kill", &a]);
    wait_for("the relay to follow the failover to the new master", || {
        following(&lab, &relay_ip, &b_ip)
    });
    lab.cli(&b, &password, &["SET", "after-failover", "1"]);
    wait_for("the replica pod to follow the new master", || {
        synced(&lab, &b)
    });
    let stats = lab.cli(&b, &password, &["INFO", "stats"]);
    assert_eq!(
        info_field(&stats, "sync_full").as_deref(),
        Some("0"),
        "the relay continued on the new master with a partial resync: {stats}"
    );
    let relay_stats = info_of(&lab, &relay_ip, "stats");
    assert_eq!(
        info_field(&relay_stats, "sync_full").as_deref(),
        Some("1"),
        "the replica pod full-synced once, before the failover: {relay_stats}"
    );

    let values = repo().join("deploy/helm/bitnami-redis-sentinel-values.yaml");
    let helm_args = [
        vec!["--helm-release".into(), "my-redis".into()],
        vec!["--helm-password".into(), password.clone()],
        vec!["--host".into(), format!("my-redis={sentinel_ip}")],
        host_port("relay"),
        host_port("relay-metrics"),
    ]
    .concat();
    let out = kube_play_pods(&tools, &values, &work.path().join("helm"), &helm_args);
    let _helm = Played::play(&out, &["--network", &lab.network, "--ip", &helm_ip]);
    wait_for(
        "the Helm values' relay to attach to the master the Sentinel names",
        || following(&lab, &helm_ip, &b_ip),
    );
}

/// A node of the lab's cluster as `CLUSTER NODES` lists it: id, address, primary, its
/// primary's id, first slot.
struct ClusterNode {
    id: String,
    ip: String,
    primary: bool,
    primary_id: String,
    first_slot: Option<u16>,
}

fn cluster_nodes(lab: &Lab, node: &str, password: &str) -> Vec<ClusterNode> {
    let text = lab.cli(node, password, &["CLUSTER", "NODES"]);
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ip = f.get(1)?.split(':').next()?.to_string();
            Some(ClusterNode {
                id: f[0].into(),
                ip,
                primary: f[2].contains("master") && !f[2].contains("fail"),
                primary_id: f[3].into(),
                first_slot: f.get(8).and_then(|r| r.split('-').next()?.parse().ok()),
            })
        })
        .collect()
}

/// A cluster of six real server containers (three primaries, a replica each) at .10 to .15,
/// made by `redis-cli --cluster create`; the container names.
fn cluster_set(lab: &mut Lab, password: &str) -> Vec<String> {
    let server = [
        "--cluster-enabled",
        "yes",
        "--cluster-node-timeout",
        "2000",
        "--requirepass",
        password,
        "--masterauth",
        password,
        "--enable-debug-command",
        "yes",
        "--save",
        "",
    ];
    let names: Vec<String> = (0..6u8)
        .map(|i| {
            let (ip, mac) = (lab.address(10 + i), lab.mac(10 + i));
            let opts = ["--ip", &ip, "--mac-address", &mac];
            lab.run(&format!("node{i}"), &opts, REDIS, &server)
        })
        .collect();
    let addrs: Vec<String> = (0..6u8)
        .map(|i| format!("{}:6379", lab.address(10 + i)))
        .collect();
    wait_for("the nodes to answer", || {
        let pongs = names
            .iter()
            .filter(|n| lab.cli(n, password, &["PING"]) == "PONG");
        (pongs.count() == 6, ())
    });
    let mut create = vec!["--cluster", "create"];
    create.extend(addrs.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "1", "--cluster-yes"]);
    lab.cli(&names[0], password, &create);
    for n in &names {
        wait_for("the cluster to be ok", || {
            let info = lab.cli(n, password, &["CLUSTER", "INFO"]);
            (info.contains("cluster_state:ok"), info)
        });
    }
    names
}

/// The deployments of a whole cluster: the relays of deploy/kubernetes-cluster, one pod per
/// ordinal started with `podman kube play` beside a cluster of real server containers, each
/// finding the shard of its ordinal through the cluster's Service name (a hostAliases entry
/// here); the standby pod of shard 0 syncs through relay 0. The primary of shard 0 is killed:
/// relay 0 follows the promoted replica with a partial resync (no full sync on the new
/// primary) and the standby holds its data. The relay of the Bitnami redis-cluster values
/// (extraDeploy, rendered for release "my-redis-cluster"), as pod 1, follows shard 1.
#[test]
fn the_cluster_deployments_follow_their_shards_through_a_failover() {
    let _serial = serial();
    let Some(image) = image() else { return };
    let Some(tools) = tools() else { return };
    podman_ok(&["tag", image, "localhost/replica-relay:0.1.0"]);
    let password = secret("deploy/kubernetes-cluster/secret.yaml", "redis-password");
    let work = tempfile::tempdir().unwrap();
    let mut lab = Lab::new("cluster");
    let names = cluster_set(&mut lab, &password);
    let seed = lab.address(10);
    let nodes = cluster_nodes(&lab, &names[0], &password);
    let mut primaries: Vec<&ClusterNode> = nodes.iter().filter(|n| n.primary).collect();
    primaries.sort_by_key(|n| n.first_slot);
    let container_of = |ip: &str| {
        let host: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
        names[host as usize - 10].clone()
    };
    let shard0 = container_of(&primaries[0].ip);
    lab.cli(
        &shard0,
        &password,
        &["DEBUG", "POPULATE", "20000", "k", "100"],
    );

    let rendered = kustomize(&tools, "deploy/kubernetes-cluster", work.path());
    let play_relay = |ordinal: usize, ip: &str| {
        let args = [
            vec!["--only".into(), "replica-relay".into()],
            vec!["--ordinal".into(), ordinal.to_string()],
            vec!["--host".into(), format!("redis-cluster={seed}")],
            vec![
                "--host-port".into(),
                format!("relay={}", support::free_port()),
            ],
            vec![
                "--host-port".into(),
                format!("metrics={}", support::free_port()),
            ],
        ]
        .concat();
        let out = kube_play_pods(
            &tools,
            &rendered,
            &work.path().join(format!("relay{ordinal}")),
            &args,
        );
        Played::play(&out, &["--network", &lab.network, "--ip", ip])
    };
    let relay_ips: Vec<String> = (0..3u8).map(|i| lab.address(30 + i)).collect();
    let _relays: Vec<Played> = (0..3).map(|i| play_relay(i, &relay_ips[i])).collect();
    let standby_args = [
        vec!["--only".into(), "redis-standby".into()],
        vec![
            "--host".into(),
            format!("replica-relay-0.replica-relay={}", relay_ips[0]),
        ],
        vec!["--extra-arg".into(), "redis=--enable-debug-command".into()],
        vec!["--extra-arg".into(), "redis=local".into()],
        vec![
            "--host-port".into(),
            format!("redis={}", support::free_port()),
        ],
    ]
    .concat();
    let out = kube_play_pods(
        &tools,
        &rendered,
        &work.path().join("standby"),
        &standby_args,
    );
    let _standby = Played::play(&out, &["--network", &lab.network]);
    let standby = "redis-standby-0-redis".to_string();

    let following = |lab: &Lab, relay: &str, primary: &str| {
        let argv = [
            "-h",
            relay,
            "-p",
            "6380",
            "-a",
            &password,
            "INFO",
            "replication",
        ];
        let info = lab.cli(&standby, "", &argv);
        let at = info_field(&info, "master_host").as_deref() == Some(primary)
            && info_field(&info, "master_link_status").as_deref() == Some("up");
        (at, info)
    };
    for (i, primary) in primaries.iter().enumerate() {
        wait_for(&format!("relay {i} to follow shard {i}'s primary"), || {
            following(&lab, &relay_ips[i], &primary.ip)
        });
    }
    // Keys of shard 0 written through its primary, now that the relays follow it (DEBUG
    // POPULATE, before they started, is not replicated: it reaches replicas in snapshots only).
    let tag = (0..)
        .map(|i| format!("{{t{i}}}"))
        .find(|t| {
            let slot = lab.cli(&shard0, &password, &["CLUSTER", "KEYSLOT", t]);
            primaries[1]
                .first_slot
                .is_some_and(|s| slot.parse::<u16>().unwrap() < s)
        })
        .unwrap();
    let mset = |lab: &Lab, node: &str, round: &str| {
        let mut argv = vec!["MSET".to_string()];
        for i in 0..200 {
            argv.extend([format!("{tag}:{round}:{i}"), format!("v{i}")]);
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        assert_eq!(lab.cli(node, &password, &argv), "OK");
    };
    mset(&lab, &shard0, "before");
    let synced = |lab: &Lab, primary: &str| {
        let want = lab.cli(primary, &password, &["DEBUG", "DIGEST"]);
        let got = lab.cli(&standby, "", &["DEBUG", "DIGEST"]);
        (want == got && want.len() == 40, (want, got))
    };
    wait_for("the standby of shard 0 to hold its data", || {
        synced(&lab, &shard0)
    });

    // The primary fails once its cluster replica holds all it sent.
    let replica = nodes
        .iter()
        .find(|n| n.primary_id == primaries[0].id)
        .expect("shard 0 has a replica");
    let promoted = container_of(&replica.ip);
    wait_for("shard 0's replica to hold all its primary sent", || {
        let offsets = [&shard0, &promoted].map(|c| {
            info_field(
                &lab.cli(c, &password, &["INFO", "replication"]),
                "master_repl_offset",
            )
        });
        (offsets[0].is_some() && offsets[0] == offsets[1], offsets)
    });
    podman_ok(&["kill", &shard0]);
    wait_for("relay 0 to follow the promoted replica", || {
        following(&lab, &relay_ips[0], &replica.ip)
    });
    mset(&lab, &promoted, "after");
    wait_for("the standby to hold the new primary's data", || {
        synced(&lab, &promoted)
    });
    let stats = lab.cli(&promoted, &password, &["INFO", "stats"]);
    assert_eq!(
        info_field(&stats, "sync_full").as_deref(),
        Some("0"),
        "relay 0 continued on the promoted replica with a partial resync: {stats}"
    );

    let values = repo().join("deploy/helm/bitnami-redis-cluster-values.yaml");
    let helm_ip = lab.address(40);
    let helm_args = [
        vec!["--helm-release".into(), "my-redis-cluster".into()],
        vec!["--helm-password".into(), password.clone()],
        vec!["--ordinal".into(), "1".into()],
        vec![
            "--host".into(),
            format!("my-redis-cluster={}", lab.address(11)),
        ],
        vec![
            "--host-port".into(),
            format!("relay={}", support::free_port()),
        ],
        vec![
            "--host-port".into(),
            format!("relay-metrics={}", support::free_port()),
        ],
    ]
    .concat();
    let out = kube_play_pods(&tools, &values, &work.path().join("helm"), &helm_args);
    let _helm = Played::play(&out, &["--network", &lab.network, "--ip", &helm_ip]);
    wait_for(
        "the Helm values' relay 1 to follow shard 1's primary",
        || following(&lab, &helm_ip, &primaries[1].ip),
    );
}

/// Services of deploy/compose started with podman-compose, taken down with their volumes.
struct Composed {
    project: String,
}

impl Drop for Composed {
    fn drop(&mut self) {
        let _ = compose(&self.project, &["down", "-v"]);
    }
}

fn compose(project: &str, args: &[&str]) -> Output {
    Command::new("podman-compose")
        .current_dir(repo().join("deploy/compose"))
        .args(["-p", project])
        .args(args)
        .output()
        .expect("podman-compose runs")
}

/// The compose file's services as they are (but Grafana, whose image has no stand-in here):
/// the replicas sync through the relay and Prometheus scrapes it.
#[test]
fn the_compose_services_start_and_prometheus_scrapes_the_relay() {
    let _serial = serial();
    let Some(image) = image() else { return };
    let prometheus = "docker.io/prom/prometheus:v2.53.0";
    let ready = Command::new("podman-compose")
        .arg("version")
        .output()
        .is_ok()
        && podman(&["image", "exists", prometheus]).status.success();
    if !ready {
        return support::missing(
            "podman-compose and the Prometheus image (scripts/container-images)",
        );
    }
    podman_ok(&["tag", image, "localhost/replica-relay:0.1.0"]);
    let project = format!("rr-compose-{}", std::process::id());
    let services = ["master", "relay", "replica1", "replica2", "prometheus"];
    let up = compose(&project, &[&["up", "-d"][..], &services].concat());
    let _down = Composed {
        project: project.clone(),
    };
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );

    for replica in ["replica1", "replica2"] {
        let name = format!("{project}_{replica}_1");
        wait_for(&format!("{replica} to sync through the relay"), || {
            let out = podman(&["exec", &name, "redis-cli", "INFO", "replication"]);
            let info = String::from_utf8_lossy(&out.stdout).into_owned();
            let up = info_field(&info, "master_link_status").as_deref() == Some("up");
            (up, info)
        });
    }
    // Prometheus scrapes every 15 s (the compose file's setting): a longer wait than the rest.
    let query = "/api/v1/query?query=replica_relay_upstream_link_up";
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    let mut seen = None;
    while Instant::now() < deadline {
        seen = try_get(9090, query);
        if seen
            .as_ref()
            .is_some_and(|(_, body)| body.contains(r#""value":["#) && body.contains(r#","1"]"#))
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!("Prometheus never saw replica_relay_upstream_link_up = 1: {seen:?}");
}
