//! `cargo xtask bench --profile`: where the stack's CPU goes. While the
//! first closed-loop phase runs, `perf` samples every process of the stack
//! with its call stack; afterwards each component's samples become a flame
//! graph, `<state>/profiles/<component>.svg` (its folded stacks beside it),
//! and the report names each component's hottest functions.
//!
//! - The services, the gateway, PostgreSQL and Redis are unwound with their
//!   unwind tables (`--call-graph dwarf`): release builds keep no frame
//!   pointers, but every Rust binary has `.eh_frame`.
//! - Kafka's hot code is compiled by the JVM at run time and has no unwind
//!   tables: its nodes keep frame pointers (`-XX:+PreserveFramePointer`, set
//!   on every stack's nodes, a cost of a few per cent) and are sampled by
//!   them, and each JVM writes a map of its compiled methods before the
//!   samples are read (`jcmd <pid> Compiler.perfmap`), which `perf` reads to
//!   name them.

use std::collections::BTreeMap;
use std::fs;
use std::io::BufWriter;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use inferno::collapse::Collapse;
use saga_stack::{Component, StackConfig};

use super::observe;
use super::report::ComponentProfile;

/// Samples per second and CPU: enough for a picture, little enough that the
/// unwinding (a copy of each sampled stack) stays a small share of the CPU.
const FREQUENCY: &str = "97";

/// Bytes of stack copied per sample for unwinding by unwind tables.
const STACK_BYTES: &str = "16384";

/// Functions of each component the report names.
const HOTTEST: usize = 8;

/// A `perf record` running over the stack.
pub struct Recording {
    recorders: Vec<(Child, PathBuf)>,
    components: Vec<(String, Vec<i32>)>,
    dir: PathBuf,
    /// The workspace: the report names the graphs relative to it.
    root: PathBuf,
    seconds: u64,
}

/// Starts sampling every process of the stack for `seconds`, into `<state>/profiles/`.
pub fn start(config: &StackConfig, seconds: u64) -> anyhow::Result<Recording> {
    let dir = config.state_dir.join("profiles");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let components: Vec<(String, Vec<i32>)> = Component::all(config)
        .into_iter()
        .map(|c| (c.name(), observe::pids(config, c)))
        .filter(|(_, pids)| !pids.is_empty())
        .collect();
    let is_kafka = |name: &str| name.starts_with("kafka");
    let mut recorders = Vec::new();
    for (label, jvm) in [("native", false), ("kafka", true)] {
        let pids: Vec<String> = components
            .iter()
            .filter(|(name, _)| is_kafka(name) == jvm)
            .flat_map(|(_, pids)| pids.iter().map(i32::to_string))
            .collect();
        if pids.is_empty() {
            continue;
        }
        let data = dir.join(format!("{label}.perf.data"));
        let mut command = Command::new("perf");
        command.args(["record", "--quiet", "-F", FREQUENCY, "-o"]).arg(&data);
        if jvm {
            command.arg("-g");
        } else {
            command.args(["--call-graph", &format!("dwarf,{STACK_BYTES}")]);
        }
        command.args(["-p", &pids.join(","), "--", "sleep", &seconds.to_string()]);
        let child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().context("starting perf record")?;
        recorders.push((child, data));
    }
    Ok(Recording { recorders, components, dir, root: config.root.clone(), seconds })
}

/// Waits for the recording to end, then draws one flame graph per component.
/// Returns, per component, the CPU sampled and its hottest functions (by
/// CPU in the function itself) and where its flame graph is.
pub async fn finish(recording: Recording) -> anyhow::Result<BTreeMap<String, ComponentProfile>> {
    tokio::task::spawn_blocking(move || draw(recording)).await?
}

fn draw(recording: Recording) -> anyhow::Result<BTreeMap<String, ComponentProfile>> {
    let mut datas = Vec::new();
    for (child, data) in recording.recorders {
        let output = child.wait_with_output().context("waiting for perf record")?;
        if !output.status.success() {
            bail!("perf record failed: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        datas.push(data);
    }
    // The JVMs name their compiled methods for perf (/tmp/perf-<pid>.map).
    for (name, pids) in &recording.components {
        if name.starts_with("kafka") {
            for pid in pids {
                let written = Command::new("jcmd").args([&pid.to_string(), "Compiler.perfmap"]).output();
                if !written.is_ok_and(|o| o.status.success()) {
                    eprintln!("bench: {name} wrote no perf map: its compiled Java frames stay unnamed");
                }
            }
        }
    }
    let mut report = BTreeMap::new();
    for (name, pids) in &recording.components {
        let pid_list: Vec<String> = pids.iter().map(i32::to_string).collect();
        let mut folded = Vec::new();
        for data in &datas {
            let script = Command::new("perf")
                .args(["script", "-i"])
                .arg(data)
                .args(["--pid", &pid_list.join(",")])
                .stderr(Stdio::null())
                .output()
                .context("running perf script")?;
            inferno::collapse::perf::Folder::default()
                .collapse(script.stdout.as_slice(), &mut folded)
                .context("folding perf's stacks")?;
        }
        let folded = String::from_utf8_lossy(&folded).into_owned();
        // perf weighs each sample by its period: nanoseconds of CPU.
        let nanos = weight(&folded);
        if nanos == 0 {
            continue;
        }
        let file = |ext: &str| recording.dir.join(format!("{name}.{ext}"));
        fs::write(file("folded"), &folded)?;
        let mut options = inferno::flamegraph::Options::default();
        options.title = format!("{name}: CPU over {} s of closed-loop load", recording.seconds);
        options.subtitle = Some(format!("{:.0} ms of CPU, sampled at {FREQUENCY} Hz (perf)", nanos as f64 / 1e6));
        options.count_name = "ns".to_owned();
        let svg = BufWriter::new(fs::File::create(file("svg"))?);
        inferno::flamegraph::from_lines(&mut options, folded.lines(), svg).context("drawing the flame graph")?;
        let shares = |heaviest: Vec<(String, u64)>| -> Vec<(String, f64)> {
            heaviest.into_iter().map(|(name, n)| (name, n as f64 / nanos as f64)).collect()
        };
        let profile = ComponentProfile {
            cpu_ms: nanos as f64 / 1e6,
            hottest_self: shares(hottest(&folded, HOTTEST)),
            threads: shares(threads(&folded, HOTTEST)),
            flame_graph: file("svg").strip_prefix(&recording.root).unwrap_or(&file("svg")).display().to_string(),
        };
        report.insert(name.clone(), profile);
    }
    for data in datas {
        let _ = fs::remove_file(data);
    }
    Ok(report)
}

/// The weight of folded stacks (`frame;frame;... weight` per line).
fn weight(folded: &str) -> u64 {
    folded.lines().filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok()).sum()
}

/// The `n` functions with the most weight in themselves (the last frame of
/// a stack), most first.
fn hottest(folded: &str, n: usize) -> Vec<(String, u64)> {
    heaviest(folded, n, |stack| stack.rsplit(';').next())
}

/// The `n` threads with the most weight (perf puts the thread's name first
/// in each stack: a JVM's compiler threads apart from its request handlers).
fn threads(folded: &str, n: usize) -> Vec<(String, u64)> {
    heaviest(folded, n, |stack| stack.split(';').next())
}

fn heaviest(folded: &str, n: usize, frame: impl Fn(&str) -> Option<&str>) -> Vec<(String, u64)> {
    let mut own: BTreeMap<&str, u64> = BTreeMap::new();
    for line in folded.lines() {
        let Some((stack, count)) = line.rsplit_once(' ') else { continue };
        let Ok(count) = count.parse::<u64>() else { continue };
        *own.entry(frame(stack).unwrap_or(stack)).or_default() += count;
    }
    let mut own: Vec<(String, u64)> = own.into_iter().map(|(f, c)| (f.to_owned(), c)).collect();
    own.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    own.truncate(n);
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hottest_functions_are_those_with_the_most_samples_in_themselves() {
        let folded = "main;handle;decode 5\nmain;handle 2\nmain;poll;decode 3\nmain;poll;epoll_wait 4\n";
        assert_eq!(weight(folded), 14);
        assert_eq!(hottest(folded, 2), [("decode".to_owned(), 8), ("epoll_wait".to_owned(), 4)]);
        let folded = "C2_CompilerThre;Compile 6\ndata-plane-kafk;poll 3\ndata-plane-kafk;handle 2\n";
        assert_eq!(threads(folded, 1), [("C2_CompilerThre".to_owned(), 6)]);
    }
}
