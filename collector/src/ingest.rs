//! Agent events in: the typed contract (sigil-proto, `Event.body`) as it arrived over
//! gRPC, checked and handed to the store. The collector never reads an event field by
//! name: a renamed contract field fails to compile here and in the store.

use sigil_proto::{EventBody, v1};

use crate::store::{AgentEvent, IngestOutcome};

/// The events of a push the store can take, and the outcome so far (rejections, each
/// with its reason: a malformed event is answered, never silently dropped).
pub fn decode(events: Vec<v1::Event>) -> (Vec<AgentEvent>, IngestOutcome) {
    let mut out = IngestOutcome::default();
    let mut ok = Vec::with_capacity(events.len());
    for e in events {
        let body = match (e.body, e.json.is_empty()) {
            (Some(b), _) => Ok(b),
            // Agents before contract version 1 sent the event as JSON.
            (None, false) => EventBody::from_json(&e.json).map_err(|err| format!("not a contract event: {err}")),
            (None, true) => Err("no event body (a kind this collector does not know?)".to_owned()),
        };
        // A finding is the collector's conclusion: a node claiming one (a compromised node
        // framing another run, or hiding its own misuse under a forged id) is refused.
        let body = body.and_then(|b| match b {
            EventBody::Finding(_) => Err("findings are derived by the collector, not accepted from agents".to_owned()),
            b => Ok(b),
        });
        match (e.id.is_empty(), body) {
            (true, _) => out.reject("an event has no id".into()),
            (false, Err(why)) => out.reject(format!("event {}: {why}", e.id)),
            (false, Ok(body)) => ok.push(AgentEvent { id: e.id, body }),
        }
    }
    (ok, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_bodies_pass_legacy_json_is_read_into_the_same_types_and_the_rest_and_forged_findings_are_rejected_by_id() {
        let exit = v1::ProcessExit { exec_id: "e1".into(), pid: 7, ..Default::default() };
        let events = vec![
            v1::Event { id: "a".into(), body: Some(EventBody::ProcessExit(exit.clone())), ..Default::default() },
            v1::Event { id: "b".into(), json: br#"{"kind":"process_exit","exec_id":"e1","pid":7}"#.to_vec(), ..Default::default() },
            v1::Event { id: "c".into(), json: br#"{"kind":"process_exit","pid":"seven"}"#.to_vec(), ..Default::default() },
            v1::Event { id: "d".into(), ..Default::default() },
            v1::Event { id: String::new(), body: Some(EventBody::ProcessExit(exit.clone())), ..Default::default() },
            v1::Event { id: "e".into(), body: Some(EventBody::Finding(v1::Finding::default())), ..Default::default() },
        ];
        let (ok, out) = decode(events);
        assert_eq!(ok.len(), 2);
        assert!(ok.iter().all(|e| e.body == EventBody::ProcessExit(exit.clone())));
        assert_eq!(out.rejected, 4);
        assert!(out.errors[0].starts_with("event c: not a contract event"), "{:?}", out.errors);
        assert!(out.errors[1].starts_with("event d: no event body"), "{:?}", out.errors);
        assert_eq!(out.errors[2], "an event has no id");
        assert_eq!(out.errors[3], "event e: findings are derived by the collector, not accepted from agents");
    }
}
