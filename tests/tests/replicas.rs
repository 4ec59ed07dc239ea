#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! Several collector replicas on one real PostgreSQL: a real agent streams to them and
//! switches replica mid-stream (each in turn is killed, as a crashed or rescheduled
//! replica would be); every event is stored exactly once.

use std::{
    collections::BTreeSet,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use sigil_tests::{
    postgres::{Backend, Db, stored_execs},
    *,
};

/// Waits until more exec events of `path` are stored than `than` (so they got in through
/// whichever replica is up); returns the new count.
fn grows(db: &Db, path: &str, than: i64, what: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (n, _) = stored_execs(db, path);
        if n > than {
            return n;
        }
        assert!(Instant::now() < deadline, "no event stored {what} (still {n})");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_agent_switching_between_two_collector_replicas_mid_stream_stores_every_event_exactly_once() {
    let dir = scratch_dir();
    let db = Db::new(Backend::Postgres, &dir);
    let one = Collector::start(&db.arg);
    let two = Collector::start(&db.arg);
    let ((g1, h1), (g2, h2)) = (one.ports(), two.ports());
    let agent = Agent::start(&["--collector", &format!("{},{}", one.grpc, two.grpc), "--state-dir", &dir.join("state").display().to_string(), "--no-trace"]);
    let cg = TestCgroup::create(&format!("{}.slice/load.scope", unique("replicas-")));
    // A workload exec'ing steadily while the replicas die and come back in turn.
    let mut load = cg.spawn(Path::new("/bin/sh"), &["-c", "i=0; while [ $i -lt 500 ]; do /bin/true; sleep 0.02; i=$((i+1)); done"]);
    let n = grows(&db, &cg.path, 0, "through replica one");
    one.kill();
    let n = grows(&db, &cg.path, n + 20, "through replica two while replica one is down");
    let one = Collector::start_on(&db.arg, g1, h1);
    two.kill();
    grows(&db, &cg.path, n + 20, "through replica one while replica two is down");
    let two = Collector::start_on(&db.arg, g2, h2);
    assert!(load.wait().unwrap().success());

    let emitted = |agent: &Agent| -> BTreeSet<String> {
        agent
            .events()
            .iter()
            .filter(|v| v["kind"] == "process_exec" && v["cgroup"]["path"] == cg.path.as_str())
            .filter_map(|v| v["exec_id"].as_str().map(str::to_owned))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let (total, distinct) = loop {
        let counts = stored_execs(&db, &cg.path);
        if counts.0 as usize >= emitted(&agent).len() || Instant::now() > deadline {
            break counts;
        }
        thread::sleep(Duration::from_millis(250));
    };
    let want = emitted(&agent);
    assert!(want.len() >= 400, "the workload exec'd ~501 times, the agent reported {}", want.len());
    assert_eq!(total as usize, want.len(), "stored exactly the exec events the agent emitted");
    assert_eq!(distinct, total, "no event stored twice");
    let pg = db.pg.as_ref().unwrap();
    let stored: BTreeSet<String> = pg
        .client()
        .query("SELECT p.exec_id FROM events e JOIN processes p ON p.node_id = e.node_id AND p.event_id = e.stream WHERE p.cgroup_path = $1", &[&cg.path])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, want, "the stored execs are the ones the agent saw");
    // Every event, whatever its kind, once per (node, id): the table's key also holds the
    // partition's time, so an id stored under two times would show here.
    let row = pg.client().query_one("SELECT count(*), count(DISTINCT (node_id, stream)) FROM events", &[]).unwrap();
    assert_eq!(row.get::<_, i64>(0), row.get::<_, i64>(1));
    // Both replicas answer the same questions from the shared store.
    assert_eq!(one.sigil(&["posture"]), two.sigil(&["posture"]));
    let stats = agent.wait_event("agent_stats after the switches", |v| {
        v["kind"] == "agent_stats" && v["export"]["send_errors"].as_u64().unwrap_or(0) > 0 && v["export"]["spool"]["depth_events"] == 0
    });
    assert_eq!(stats["export"]["spool"]["dropped_total"], 0);
    drop((one, two));
    let _ = std::fs::remove_dir_all(dir);
}
