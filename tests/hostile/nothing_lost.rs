//! Nothing lost: a steady mixed load (uploads included) through 1000 users-file reloads and then
//! a graceful shutdown. Every request gets a correct answer, every accepted upload reaches the
//! upstream whole, and no upload reaches it broken.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::SeqCst},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, channel::Channel};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

use crate::{
    common::{self, basic},
    harness::{PATIENCE, Rig},
};

const WORKERS: u64 = 6;
const RELOADS: u64 = 1000;

/// What a worker expects of one request.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// alice uploads records: 200, and the upstream gets the body whole.
    Upload,
    /// bob reads a dataset: 200 in his own workspace.
    Read,
    /// carol's `/api/me`: 200, answered here.
    Me,
    /// A wrong key: 401.
    BadKey,
    /// carol asks for team-a: 404.
    Forbidden,
    /// alice by Basic: 200 in team-a.
    Basic,
}

#[derive(Debug)]
struct Outcome {
    kind: Kind,
    status: u16,
    body: Bytes,
    /// For uploads: the digest of what was sent.
    sent: Option<[u8; 32]>,
}

fn upload_body(id: u64) -> Bytes {
    let pad = "r".repeat(16 * 1024 + usize::try_from(id % 7).unwrap() * 10_000);
    Bytes::from(format!(
        r#"{{"id":{id},"records":[{{"text":"{pad}","annotation":{{"agent":"alice"}}}}]}}"#
    ))
}

async fn one(
    client: &Client<HttpConnector, Full<Bytes>>,
    base: &str,
    id: u64,
) -> Result<Outcome, String> {
    let kind = match id % 6 {
        0 | 3 => Kind::Upload,
        1 => Kind::Read,
        2 => Kind::Me,
        4 => Kind::BadKey,
        _ => {
            if id % 12 == 5 {
                Kind::Forbidden
            } else {
                Kind::Basic
            }
        }
    };
    let (method, path, header, value, body) = match kind {
        Kind::Upload => (
            "POST",
            format!("/api/datasets/ds/TextClassification:bulk?n={id}"),
            "x-argilla-api-key",
            "alice-key".to_owned(),
            upload_body(id),
        ),
        Kind::Read => (
            "GET",
            format!("/api/datasets/ds?n={id}"),
            "x-argilla-api-key",
            "bob-key".to_owned(),
            Bytes::new(),
        ),
        Kind::Me => (
            "GET",
            "/api/me".to_owned(),
            "authorization",
            "Bearer carol-key".to_owned(),
            Bytes::new(),
        ),
        Kind::BadKey => (
            "GET",
            format!("/api/datasets/ds?n={id}"),
            "x-argilla-api-key",
            "alice-key-wrong".to_owned(),
            Bytes::new(),
        ),
        Kind::Forbidden => (
            "GET",
            format!("/api/datasets/ds?n={id}&workspace=team-a"),
            "x-argilla-api-key",
            "carol-key".to_owned(),
            Bytes::new(),
        ),
        Kind::Basic => (
            "GET",
            format!("/api/datasets/ds?n={id}&workspace=team-a"),
            "authorization",
            basic("alice", "alice-pw"),
            Bytes::new(),
        ),
    };
    let sent = matches!(kind, Kind::Upload).then(|| Sha256::digest(&body).into());
    let request = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header(header, value)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let body = tokio::time::timeout(PATIENCE, response.into_body().collect())
        .await
        .map_err(|_| "body not finished in time".to_owned())?
        .map_err(|e| format!("body broke off: {e:?}"))?
        .to_bytes();
    Ok(Outcome {
        kind,
        status,
        body,
        sent,
    })
}

fn check(id: u64, outcome: &Outcome) {
    let want = match outcome.kind {
        Kind::Upload | Kind::Read | Kind::Me | Kind::Basic => 200,
        Kind::BadKey => 401,
        Kind::Forbidden => 404,
    };
    assert_eq!(
        outcome.status,
        want,
        "request {id} ({:?}) got {}: {}",
        outcome.kind,
        outcome.status,
        String::from_utf8_lossy(&outcome.body)
    );
    if let Kind::Me = outcome.kind {
        let me: serde_json::Value = serde_json::from_slice(&outcome.body).unwrap();
        assert_eq!(me["username"], "carol", "request {id}");
    }
}

/// Two equivalent users files that differ in bytes (order, comments, an extra user), so that
/// every reload really replaces the store.
fn users_version(i: u64) -> String {
    let base = common::users_yaml();
    if i.is_multiple_of(2) {
        format!("# reload {i}\n{base}")
    } else {
        let temp = common::Entry::new(&format!("temp{i}"))
            .password("temp-pw")
            .key(format!("temp-key-{i}"))
            .workspaces(&[]);
        format!("{base}{}", temp.yaml())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_lost_through_reloads_and_shutdown() {
    // One in six requests has a wrong key: lift the per-address failure budget, which would
    // otherwise (rightly) answer 429 to everything from 127.0.0.1 after 100 failures.
    let mut rig = Rig::with(|o| {
        o.env(
            "ARGILLA_GATEWAY_RATE_LIMIT_FAILURES_PER_ADDRESS",
            "10000000",
        )
    })
    .await;
    let base = format!("http://{}", rig.gw.addr);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let stopping = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let outcomes: Arc<Mutex<HashMap<u64, Outcome>>> = Arc::default();
    let lost: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();

    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (client, base) = (client.clone(), base.clone());
        let (stopping, next) = (stopping.clone(), next.clone());
        let (outcomes, lost) = (outcomes.clone(), lost.clone());
        workers.push(tokio::spawn(async move {
            // Bounded: the run ends at shutdown, or after this many requests per worker.
            for _ in 0..50_000 {
                if stopping.load(SeqCst) {
                    return;
                }
                let id = next.fetch_add(1, SeqCst);
                match one(&client, &base, id).await {
                    Ok(outcome) => {
                        outcomes.lock().unwrap().insert(id, outcome);
                    }
                    Err(why) => {
                        // A refused connection is fine once shutdown has begun; before, it is a
                        // lost request.
                        if !stopping.load(SeqCst) {
                            lost.lock().unwrap().push((id, why));
                        }
                        return;
                    }
                }
            }
        }));
    }

    // 1000 reloads while the load runs: file replaced by rename, then read and applied.
    let users = rig.gw.users.clone();
    let file = rig.gw.users_file.clone();
    let dir = rig.gw.dir.path().to_owned();
    let applied_before = users.status().applied;
    tokio::task::spawn_blocking(move || {
        for i in 0..RELOADS {
            let temp = dir.join(".users.yml.tmp");
            std::fs::write(&temp, users_version(i)).unwrap();
            std::fs::rename(&temp, &file).unwrap();
            users.reload().unwrap();
        }
    })
    .await
    .unwrap();
    let status = rig.gw.users.status();
    assert!(
        status.applied - applied_before >= RELOADS,
        "only {} of {RELOADS} reloads applied",
        status.applied - applied_before
    );
    let during_reloads = next.load(SeqCst);
    assert!(
        during_reloads > 100,
        "the load did not run beside the reloads ({during_reloads} requests)"
    );

    // An upload in flight when shutdown begins: half sent, then the rest after the listener
    // has closed. It must complete and arrive whole.
    let streaming = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Channel<Bytes>>();
    let (mut sender, body) = Channel::<Bytes>::new(4);
    let halves = (
        Bytes::from(format!(
            r#"{{"id":"in-flight","records":[{{"text":"{}"#,
            "h".repeat(100_000)
        )),
        Bytes::from(format!(r#"{}"}}]}}"#, "t".repeat(100_000))),
    );
    let whole_digest: [u8; 32] = {
        let mut h = Sha256::new();
        h.update(&halves.0);
        h.update(&halves.1);
        h.finalize().into()
    };
    let request = Request::post(format!(
        "{base}/api/datasets/ds/TextClassification:bulk?n=in-flight"
    ))
    .header("x-argilla-api-key", "alice-key")
    .body(body)
    .unwrap();
    let in_flight = tokio::spawn(async move { streaming.request(request).await });
    sender.send_data(halves.0.clone()).await.unwrap();
    // Wait until the upstream is receiving it (the head has been forwarded).
    tokio::time::timeout(PATIENCE, async {
        while !rig.up.head_seen("n=in-flight") {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the in-flight upload reaches the upstream");

    stopping.store(true, SeqCst);
    let gw_addr = rig.gw.addr;
    let finishing = async {
        // The listener closes: new connections are refused.
        tokio::time::timeout(PATIENCE, async {
            while TcpStream::connect(gw_addr).await.is_ok() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("new connections are refused once shutdown begins");
        sender.send_data(halves.1.clone()).await.unwrap();
        drop(sender);
        let response = tokio::time::timeout(PATIENCE, in_flight)
            .await
            .expect("the in-flight upload is answered")
            .unwrap()
            .expect("the in-flight upload is not cut off by shutdown");
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
    };
    tokio::join!(rig.gw.stop(), finishing);
    for worker in workers {
        tokio::time::timeout(PATIENCE, worker)
            .await
            .expect("workers end after shutdown")
            .unwrap();
    }

    let lost = lost.lock().unwrap().clone();
    assert!(lost.is_empty(), "requests lost before shutdown: {lost:?}");
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    for (id, outcome) in &outcomes {
        check(*id, outcome);
    }

    // The upstream side: every accepted upload arrived once and whole, nothing arrived broken,
    // and every forwarded request spoke for the right user in the right workspace.
    let received = rig.up.requests();
    let mut by_n: HashMap<String, Vec<&crate::harness::Rec>> = HashMap::new();
    for rec in &received {
        assert!(
            rec.complete,
            "a request reached the upstream broken: {rec:#?}"
        );
        let n = form_urlencoded::parse(rec.query.as_deref().unwrap_or_default().as_bytes())
            .find(|(k, _)| k == "n")
            .map(|(_, v)| v.into_owned())
            .expect("every forwarded request carries its number");
        by_n.entry(n).or_default().push(rec);
    }
    let mut uploads = 0;
    for (id, outcome) in &outcomes {
        let recs = by_n.get(&id.to_string()).map_or(&[][..], Vec::as_slice);
        match outcome.kind {
            Kind::Upload => {
                uploads += 1;
                assert_eq!(
                    recs.len(),
                    1,
                    "upload {id} reached the upstream {} times",
                    recs.len()
                );
                let digest: [u8; 32] = Sha256::digest(&recs[0].body).into();
                assert_eq!(Some(digest), outcome.sent, "upload {id} arrived altered");
                assert_eq!(recs[0].workspace_params(), ["workspace=alice"]);
                crate::harness::assert_speaks_for(recs[0], "alice");
            }
            Kind::Read => {
                assert_eq!(recs.len(), 1, "read {id}");
                assert_eq!(recs[0].workspace_params(), ["workspace=bob"]);
                crate::harness::assert_speaks_for(recs[0], "bob");
            }
            Kind::Basic => {
                assert_eq!(recs.len(), 1, "basic {id}");
                assert_eq!(recs[0].workspace_params(), ["workspace=team-a"]);
                crate::harness::assert_speaks_for(recs[0], "alice");
            }
            Kind::Me | Kind::BadKey | Kind::Forbidden => {
                assert!(
                    recs.is_empty(),
                    "{:?} {id} reached the upstream",
                    outcome.kind
                );
            }
        }
    }
    assert!(uploads > 30, "too few uploads to mean anything: {uploads}");
    let in_flight = by_n.get("in-flight").expect("the in-flight upload arrived");
    assert_eq!(in_flight.len(), 1);
    let digest: [u8; 32] = Sha256::digest(&in_flight[0].body).into();
    assert_eq!(digest, whole_digest, "the in-flight upload arrived altered");
    // Every forwarded request belongs to an answered one (or the in-flight upload): nothing
    // reached the upstream on behalf of a request whose client got no answer.
    for n in by_n.keys() {
        if n != "in-flight" {
            let id: u64 = n.parse().unwrap();
            assert!(
                outcomes.contains_key(&id),
                "request {id} reached the upstream but its client got no answer"
            );
        }
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(gw_addr))
            .await
            .map_or(true, |c| c.is_err()),
        "the gateway still accepts connections after shutdown"
    );
}
