//! The OpenAPI 3 document, served at `/api/openapi.json`. Every schema in
//! it is generated from the Rust type the handler serializes or parses
//! (schemars); what is written here is only the table of operations: path,
//! method, who may call it, its parameters, and which type answers which
//! status. A test runs schemathesis against the served document.

use schemars::Schema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use crate::{BanBody, BansQuery, Decision, ExtendBody, GenerationsReply, ListBody, StreamQuery};
use voipwall_core::daemon::control::{
    BansReply, CallDecideReply, EventsReply, ExplainReply, StatusAnswer,
};
use voipwall_core::plane::Outcome;

/// An address or network, as a pattern (the plane still checks it: a
/// string of this shape may not be one, or may be refused).
pub(crate) const TARGET: &str = r"^([0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?|[0-9A-Fa-f]{0,4}(:[0-9A-Fa-f]{0,4}){2,7}(/[0-9]{1,3})?)$";

/// A duration as `--for` takes it.
pub(crate) const DURATION: &str = r"^(permanent|([1-9][0-9]{0,4}[smhd]){1,3})$";

/// Who may call an operation.
#[derive(Clone, Copy)]
enum Who {
    /// Admin and read tokens.
    Read,
    /// Admin tokens.
    Admin,
    /// Bouncer and admin tokens (`X-Api-Key` or `Authorization: Bearer`).
    Bouncer,
    /// Any token (bouncer, read, admin).
    AnyToken,
    /// Nobody needs a token.
    Anyone,
}

/// One operation.
struct Operation {
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    who: Who,
    /// Query parameters: the type whose fields they are.
    query: Option<Schema>,
    /// Path parameters.
    path_params: &'static [(&'static str, &'static str)],
    /// Media type and schema of the request body.
    body: Option<(&'static str, Schema)>,
    /// Status and the schema of its JSON body (`None`: a problem).
    ok: (u16, Option<(&'static str, Schema)>),
    /// Statuses besides the common ones that answer with a problem.
    problems: &'static [u16],
}

/// The document.
pub(crate) fn document() -> Value {
    let mut settings = SchemaSettings::openapi3();
    settings.meta_schema = None;
    let mut g = settings.into_generator();
    let json_body = |s: Schema| Some(("application/json", s));
    let ops = vec![
        Operation {
            method: "get",
            path: "/api/v1/status",
            id: "status",
            summary: "Daemon state and counters (or safe mode holding the policy back).",
            who: Who::Read,
            query: None,
            path_params: &[],
            body: None,
            ok: (200, json_body(g.subschema_for::<StatusAnswer>())),
            problems: &[],
        },
        Operation {
            method: "get",
            path: "/api/v1/bans",
            id: "listBans",
            summary: "Bans from the store, newest first; search by rule and network.",
            who: Who::Read,
            query: Some(g.subschema_for::<BansQuery>()),
            path_params: &[],
            body: None,
            ok: (200, json_body(g.subschema_for::<BansReply>())),
            problems: &[400],
        },
        Operation {
            method: "post",
            path: "/api/v1/bans",
            id: "ban",
            summary: "Ban an address or network, through the same plane as `voipwall ban`.",
            who: Who::Admin,
            query: None,
            path_params: &[],
            body: json_body(g.subschema_for::<BanBody>()),
            ok: (200, json_body(g.subschema_for::<Outcome>())),
            problems: &[400, 413, 422],
        },
        Operation {
            method: "delete",
            path: "/api/v1/bans/{target}",
            id: "unban",
            summary: "Lift the bans of a target (a network as `203.0.113.0%2F24`).",
            who: Who::Admin,
            query: None,
            path_params: &[("target", "An address or network.")],
            body: None,
            ok: (200, json_body(g.subschema_for::<Outcome>())),
            problems: &[400, 404, 422],
        },
        Operation {
            method: "post",
            path: "/api/v1/bans/{target}/extend",
            id: "extend",
            summary: "Set a ban's remaining time to the duration given; never shortens it.",
            who: Who::Admin,
            query: None,
            path_params: &[("target", "An address or network.")],
            body: json_body(g.subschema_for::<ExtendBody>()),
            ok: (200, json_body(g.subschema_for::<Outcome>())),
            problems: &[400, 404, 413, 422],
        },
        Operation {
            method: "post",
            path: "/api/v1/allow",
            id: "allow",
            summary: "A runtime allow entry (never banned, whatever detection sees).",
            who: Who::Admin,
            query: None,
            path_params: &[],
            body: json_body(g.subschema_for::<ListBody>()),
            ok: (200, json_body(g.subschema_for::<Outcome>())),
            problems: &[400, 413, 422],
        },
        Operation {
            method: "delete",
            path: "/api/v1/allow/{target}",
            id: "disallow",
            summary: "Remove a runtime allow entry.",
            who: Who::Admin,
            query: None,
            path_params: &[("target", "An address or network.")],
            body: None,
            ok: (200, json_body(g.subschema_for::<Outcome>())),
            problems: &[400, 404, 422],
        },
        Operation {
            method: "post",
            path: "/api/v1/block",
            id: "block",
            summary: "A runtime block entry (dropped like a ban; permanent unless a duration is given).",
            who: Who::Admin,
            query: None,
            path_params: &[],
            body: json_body(g.subschema_for::<ListBody>()),
            ok: (200, json_body(g.subschema_for::<Outcome>())),
            problems: &[400, 413, 422],
        },
        Operation {
            method: "delete",
            path: "/api/v1/block/{target}",
            id: "unblock",
            summary: "Remove a runtime block entry.",
            who: Who::Admin,
            query: None,
            path_params: &[("target", "An address or network.")],
            body: None,
            ok: (200, json_body(g.subschema_for::<Outcome>())),
            problems: &[400, 404, 422],
        },
        Operation {
            method: "get",
            path: "/api/v1/explain/{addr}",
            id: "explain",
            summary: "What detection knows about an address and its stored bans.",
            who: Who::Read,
            query: None,
            path_params: &[("addr", "An IPv4 or IPv6 address.")],
            body: None,
            ok: (200, json_body(g.subschema_for::<ExplainReply>())),
            problems: &[400, 404],
        },
        Operation {
            method: "get",
            path: "/api/v1/generations",
            id: "generations",
            summary: "The recorded rulesets, newest first, and which one is in force.",
            who: Who::Read,
            query: None,
            path_params: &[],
            body: None,
            ok: (200, json_body(g.subschema_for::<GenerationsReply>())),
            problems: &[],
        },
        Operation {
            method: "get",
            path: "/api/v1/generations/{id}/diff",
            id: "generationDiff",
            summary: "What generation `id` changed against the one recorded before it (nft script lines).",
            who: Who::Read,
            query: None,
            path_params: &[("id", "A generation's number.")],
            body: None,
            ok: (
                200,
                json_body(g.subschema_for::<voipwall_core::safety::GenerationDiff>()),
            ),
            problems: &[400, 404],
        },
        Operation {
            method: "post",
            path: "/api/v1/generations/confirm",
            id: "confirm",
            summary: "Keep the generation an `apply --confirm` is waiting on (409: nothing waits).",
            who: Who::Admin,
            query: None,
            path_params: &[],
            body: None,
            ok: (200, json_body(g.subschema_for::<crate::GenerationReply>())),
            problems: &[409],
        },
        Operation {
            method: "post",
            path: "/api/v1/generations/rollback",
            id: "rollback",
            summary: "Apply the generation before the one in force, or generation `to` (409: there is none).",
            who: Who::Admin,
            query: None,
            path_params: &[],
            body: json_body(g.subschema_for::<crate::RollbackBody>()),
            ok: (200, json_body(g.subschema_for::<crate::GenerationReply>())),
            problems: &[400, 409, 413],
        },
        Operation {
            method: "post",
            path: "/api/v1/call/decide",
            id: "callDecide",
            summary: "What the call rules ([call]) say of a call about to be placed, from the daemon's counters; nothing is counted.",
            who: Who::Read,
            query: None,
            path_params: &[],
            body: json_body(g.subschema_for::<crate::CallDecideBody>()),
            ok: (200, json_body(g.subschema_for::<CallDecideReply>())),
            problems: &[400, 413, 422],
        },
        Operation {
            method: "post",
            path: "/api/v1/policy/check",
            id: "policyCheck",
            summary: "Check a policy file's text: every diagnostic at once, with line and column. Nothing is applied; `include` is not followed.",
            who: Who::Read,
            query: None,
            path_params: &[],
            body: Some(("text/plain", g.subschema_for::<String>())),
            ok: (
                200,
                json_body(g.subschema_for::<voipwall_core::context::CheckReply>()),
            ),
            problems: &[400, 413],
        },
        Operation {
            method: "get",
            path: "/api/v1/events",
            id: "events",
            summary: "Recent events, oldest first (an event's fields are free-form).",
            who: Who::Read,
            query: Some(g.subschema_for::<crate::EventsQuery>()),
            path_params: &[],
            body: None,
            ok: (200, json_body(g.subschema_for::<EventsReply>())),
            problems: &[400],
        },
        Operation {
            method: "get",
            path: "/api/v1/drops",
            id: "drops",
            summary: "The drop log: what the firewall refused (sampled by the kernel), top sources, ports and zones.",
            who: Who::Read,
            query: Some(g.subschema_for::<crate::DropsQuery>()),
            path_params: &[],
            body: None,
            ok: (
                200,
                json_body(g.subschema_for::<voipwall_detect::drops::DropsReport>()),
            ),
            problems: &[400],
        },
        Operation {
            method: "get",
            path: "/api/v1/events/stream",
            id: "eventsStream",
            summary: "Server-Sent Events: the recent events, then each as it happens (endless).",
            who: Who::Read,
            query: Some(g.subschema_for::<crate::EventsQuery>()),
            path_params: &[],
            body: None,
            ok: (200, Some(("text/event-stream", sse_event()))),
            problems: &[400],
        },
        Operation {
            method: "get",
            path: "/v1/decisions/stream",
            id: "decisionsStream",
            summary: "CrowdSec's decision stream: all bans with `startup=true`, then what changed since this bouncer's last pull.",
            who: Who::Bouncer,
            query: Some(g.subschema_for::<StreamQuery>()),
            path_params: &[],
            body: None,
            ok: (200, json_body(g.subschema_for::<crate::StreamReply>())),
            problems: &[400],
        },
        Operation {
            method: "get",
            path: "/v1/decisions",
            id: "decisions",
            summary: "CrowdSec's live-mode query: the decisions in force covering `ip` (null: none).",
            who: Who::AnyToken,
            query: Some(g.subschema_for::<crate::DecisionsQuery>()),
            path_params: &[],
            body: None,
            ok: (200, json_body(g.subschema_for::<Option<Vec<Decision>>>())),
            problems: &[400],
        },
        Operation {
            method: "get",
            path: "/v1/banlist.txt",
            id: "banlist",
            summary: "The bans in force, one address or network per line.",
            who: Who::AnyToken,
            query: None,
            path_params: &[],
            body: None,
            ok: (200, Some(("text/plain", g.subschema_for::<String>()))),
            problems: &[],
        },
        Operation {
            method: "get",
            path: "/metrics",
            id: "metrics",
            summary: "Prometheus metrics (OpenMetrics text).",
            who: Who::Read,
            query: None,
            path_params: &[],
            body: None,
            ok: (
                200,
                Some(("application/openmetrics-text", g.subschema_for::<String>())),
            ),
            problems: &[],
        },
        Operation {
            method: "get",
            path: "/api/openapi.json",
            id: "openapi",
            summary: "This document.",
            who: Who::Anyone,
            query: None,
            path_params: &[],
            body: None,
            ok: (200, json_body(g.subschema_for::<Value>())),
            problems: &[],
        },
    ];
    let _ = g.subschema_for::<Decision>();
    let problem = problem_schema();
    let mut paths = Map::new();
    for op in &ops {
        let entry = paths
            .entry(op.path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("an object");
        entry.insert(op.method.to_string(), operation(op, &mut g));
    }
    let mut schemas = g.take_definitions(true);
    schemas.insert("Problem".into(), problem);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "voipwall",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "voipwall's HTTP API: the same ban plane and typed answers as the CLI. \
                Errors are RFC 9457 problems (`application/problem+json`). Tokens: \
                `voipwall token create --role admin|read|bouncer --name NAME`.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
        },
    })
}

/// One Server-Sent Event as clients read it: `data` is an event's JSON,
/// `event` its kind.
fn sse_event() -> Schema {
    Schema::try_from(json!({
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {"type": "string", "description": "The event, as JSON."},
            "event": {"type": "string", "description": "Its kind (`ban`, `alert`, `allow`, ...)."},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
        },
    }))
    .expect("an object is a schema")
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "An RFC 9457 problem.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
        },
    })
}

fn operation(op: &Operation, g: &mut SchemaGenerator) -> Value {
    let mut params = Vec::new();
    for (name, description) in op.path_params {
        let schema = if *name == "id" {
            json!({"type": "integer", "format": "int64"})
        } else {
            json!({"type": "string", "minLength": 1, "pattern": TARGET})
        };
        params.push(json!({
            "name": name, "in": "path", "required": true, "description": description,
            "schema": schema,
        }));
    }
    if let Some(q) = &op.query {
        params.extend(query_params(q, g));
    }
    let problem = json!({
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    });
    let mut responses = Map::new();
    let (code, ok) = &op.ok;
    let ok_body = match ok {
        Some((media, schema)) => json!({
            "description": "Done.",
            "content": {*media: {"schema": schema}},
        }),
        None => json!({"description": "Done."}),
    };
    responses.insert(code.to_string(), ok_body);
    let mut problems: Vec<(u16, &str)> = op
        .problems
        .iter()
        .map(|c| {
            (
                *c,
                match c {
                    400 => "The request is malformed.",
                    404 => "No such resource.",
                    409 => {
                        "Not possible in the present state (nothing to confirm or roll back to)."
                    }
                    413 => "The body is larger than 64 KiB.",
                    422 => "Refused (nothing was changed): the reason is in `detail`.",
                    _ => "A problem.",
                },
            )
        })
        .collect();
    if !matches!(op.who, Who::Anyone) {
        problems.push((401, "No token, or one that is unknown or revoked."));
        problems.push((403, "The token's role may not do this."));
        problems.push((
            503,
            "The daemon did not answer, or tokens cannot be checked now.",
        ));
    }
    for (c, d) in problems {
        let mut p = problem.clone();
        p["description"] = json!(d);
        responses.insert(c.to_string(), p);
    }
    let mut o = json!({
        "operationId": op.id,
        "summary": op.summary,
        "parameters": params,
        "responses": responses,
    });
    o["security"] = match op.who {
        Who::Anyone => json!([]),
        Who::Bouncer | Who::AnyToken => json!([{"apiKey": []}, {"bearer": []}]),
        Who::Read | Who::Admin => json!([{"bearer": []}]),
    };
    if let Who::Admin = op.who {
        o["description"] = json!("Needs an admin token; lands in the audit log with its name.");
    }
    if let Some((media, b)) = &op.body {
        o["requestBody"] = json!({
            // An empty rollback body means "the generation before".
            "required": op.id != "rollback",
            "content": {*media: {"schema": b}},
        });
    }
    o
}

/// The query parameters of a query type: one per property of its schema.
fn query_params(s: &Schema, g: &mut SchemaGenerator) -> Vec<Value> {
    let Some(r) = s.get("$ref").and_then(Value::as_str) else {
        return Vec::new();
    };
    let name = r.rsplit('/').next().unwrap_or_default().to_string();
    let defs = g.definitions_mut();
    let Some(def) = defs.remove(&name) else {
        return Vec::new();
    };
    let required: Vec<&str> = def
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    if let Some(props) = def.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            let mut schema = v.clone();
            // `Option<T>`: a query parameter is absent, never null.
            if let Some(t) = schema.get("type").and_then(Value::as_array).cloned() {
                let t: Vec<Value> = t.into_iter().filter(|t| t != "null").collect();
                schema["type"] = t.first().cloned().unwrap_or(json!("string"));
            }
            let description = schema
                .as_object_mut()
                .and_then(|o| o.remove("description"))
                .unwrap_or(json!(""));
            out.push(json!({
                "name": k, "in": "query", "required": required.contains(&k.as_str()),
                "description": description, "schema": schema,
            }));
        }
    }
    out
}
