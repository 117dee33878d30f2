#![cfg(feature = "redis")]
//! The Redis Streams commands the job queue is built on, through redis-rs against a real
//! redis-server (tests/common/redis.rs): typed replies, how server errors surface, and that an
//! acknowledged XADD survives a `kill -9` and restart (AOF).

mod common;

use common::redis::RedisServer;
use redis::AsyncCommands;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamInfoConsumersReply, StreamInfoGroupsReply,
    StreamInfoStreamReply, StreamPendingCountReply, StreamPendingReply, StreamRangeReply,
    StreamReadOptions, StreamReadReply,
};
use redis::{ErrorKind, RedisResult, ServerErrorKind};

const STREAM: &str = "jobs";
const GROUP: &str = "workers";

/// Acknowledges `id` and deletes it, atomically: the queue's "done" step.
const ACK_DEL: &str = r"
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 1 then redis.call('XDEL', KEYS[1], ARGV[2]) end
return acked
";

#[tokio::test]
async fn streams_commands_and_aof_restart() {
    common::within(60, "the redis streams walk-through", walk_through()).await;
}

async fn walk_through() {
    let mut server = RedisServer::start();
    let client = redis::Client::open(server.url()).expect("client for the test server");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("multiplexed tokio connection");

    // XREADGROUP before the group exists: a server error redis-rs does not know by name.
    let read_c1 = StreamReadOptions::default()
        .group(GROUP, "c1")
        .count(10)
        .block(100);
    let err = con
        .xread_options::<_, _, Option<StreamReadReply>>(&[STREAM], &[">"], &read_c1)
        .await
        .expect_err("XREADGROUP without a group");
    assert_eq!(err.kind(), ErrorKind::Extension, "{err:?}");
    assert_eq!(err.code(), Some("NOGROUP"), "{err:?}");

    // XGROUP CREATE ... MKSTREAM; a second time: BUSYGROUP.
    let () = con
        .xgroup_create_mkstream(STREAM, GROUP, "$")
        .await
        .expect("XGROUP CREATE MKSTREAM");
    let err = con
        .xgroup_create_mkstream::<_, _, _, ()>(STREAM, GROUP, "$")
        .await
        .expect_err("the group exists");
    assert_eq!(err.kind(), ErrorKind::Extension, "{err:?}");
    assert_eq!(err.code(), Some("BUSYGROUP"), "{err:?}");

    // XADD with an auto id returns the id as a string.
    let a: String = con
        .xadd(STREAM, "*", &[("payload", "a")])
        .await
        .expect("XADD a");
    let b: String = con
        .xadd(STREAM, "*", &[("payload", "b")])
        .await
        .expect("XADD b");
    assert!(a < b, "{a} then {b}");

    // XREADGROUP GROUP g c1 COUNT 10 BLOCK 100 STREAMS jobs >
    let reply: Option<StreamReadReply> = con
        .xread_options(&[STREAM], &[">"], &read_c1)
        .await
        .expect("XREADGROUP");
    let reply = reply.expect("two new entries");
    assert_eq!(reply.keys.len(), 1);
    assert_eq!(reply.keys[0].key, STREAM);
    let ids: Vec<&str> = reply.keys[0].ids.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [a.as_str(), b.as_str()]);
    assert_eq!(
        reply.keys[0].ids[0].get::<String>("payload").as_deref(),
        Some("a")
    );
    // Nothing new: BLOCK times out with a nil reply, which is `None` (and an empty
    // `StreamReadReply` when asked for one directly).
    let none: Option<StreamReadReply> = con
        .xread_options(&[STREAM], &[">"], &read_c1)
        .await
        .expect("XREADGROUP, nothing new");
    assert!(none.is_none());
    let empty: StreamReadReply = con
        .xread_options(&[STREAM], &[">"], &read_c1)
        .await
        .expect("XREADGROUP into StreamReadReply, nothing new");
    assert!(empty.keys.is_empty());

    // XPENDING summary form.
    let pending: StreamPendingReply = con.xpending(STREAM, GROUP).await.expect("XPENDING");
    assert_eq!(pending.count(), 2);

    // XACK a; XACK of an unknown id counts 0.
    let acked: usize = con.xack(STREAM, GROUP, &[&a]).await.expect("XACK");
    assert_eq!(acked, 1);
    let acked: usize = con.xack(STREAM, GROUP, &["0-1"]).await.expect("XACK");
    assert_eq!(acked, 0);

    // XGROUP CREATECONSUMER (1 = created, 0 = existed).
    let created: usize = con
        .xgroup_createconsumer(STREAM, GROUP, "c2")
        .await
        .expect("XGROUP CREATECONSUMER");
    assert_eq!(created, 1);
    let created: usize = con
        .xgroup_createconsumer(STREAM, GROUP, "c2")
        .await
        .expect("XGROUP CREATECONSUMER again");
    assert_eq!(created, 0);

    // XAUTOCLAIM jobs workers c2 0 0-0 COUNT 10: c2 takes b over from c1.
    let claimed: StreamAutoClaimReply = con
        .xautoclaim_options(
            STREAM,
            GROUP,
            "c2",
            0,
            "0-0",
            StreamAutoClaimOptions::default().count(10),
        )
        .await
        .expect("XAUTOCLAIM");
    let claimed_ids: Vec<&str> = claimed.claimed.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(claimed_ids, [b.as_str()]);
    assert_eq!(claimed.next_stream_id, "0-0");
    assert!(claimed.deleted_ids.is_empty());

    // XPENDING extended form: per entry, owner and delivery count.
    let detail: StreamPendingCountReply = con
        .xpending_count(STREAM, GROUP, "-", "+", 10)
        .await
        .expect("XPENDING - + 10");
    assert_eq!(detail.ids.len(), 1);
    assert_eq!(detail.ids[0].id, b);
    assert_eq!(detail.ids[0].consumer, "c2");
    assert_eq!(detail.ids[0].times_delivered, 2);
    // With IDLE (no typed method): redis::cmd, parsed into the same reply type.
    let idle: StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(STREAM)
        .arg(GROUP)
        .arg("IDLE")
        .arg(0)
        .arg("-")
        .arg("+")
        .arg(10)
        .arg("c2")
        .query_async(&mut con)
        .await
        .expect("XPENDING IDLE 0 - + 10 c2");
    assert_eq!(idle.ids.len(), 1);

    // XINFO STREAM / GROUPS / CONSUMERS.
    let info: StreamInfoStreamReply = con.xinfo_stream(STREAM).await.expect("XINFO STREAM");
    assert_eq!((info.length, info.groups), (2, 1));
    assert_eq!(info.last_generated_id, b);
    assert_eq!(info.first_entry.id, a);
    let groups: StreamInfoGroupsReply = con.xinfo_groups(STREAM).await.expect("XINFO GROUPS");
    assert_eq!(groups.groups.len(), 1);
    assert_eq!(groups.groups[0].name, GROUP);
    assert_eq!(groups.groups[0].pending, 1);
    assert_eq!(groups.groups[0].consumers, 2);
    assert_eq!(groups.groups[0].last_delivered_id, b);
    assert_eq!(groups.groups[0].lag, Some(0));
    let consumers: StreamInfoConsumersReply = con
        .xinfo_consumers(STREAM, GROUP)
        .await
        .expect("XINFO CONSUMERS");
    let mut owners: Vec<(&str, usize)> = consumers
        .consumers
        .iter()
        .map(|c| (c.name.as_str(), c.pending))
        .collect();
    owners.sort();
    assert_eq!(owners, [("c1", 0), ("c2", 1)]);

    // XGROUP DELCONSUMER answers how many entries the consumer still had pending.
    let dropped: usize = con
        .xgroup_delconsumer(STREAM, GROUP, "c1")
        .await
        .expect("XGROUP DELCONSUMER");
    assert_eq!(dropped, 0);

    // MULTI/EXEC: an atomic pipeline of XACK and XDEL; the reply is a tuple of both.
    let (acked, deleted): (usize, usize) = redis::pipe()
        .atomic()
        .xack(STREAM, GROUP, &[&b])
        .xdel(STREAM, &[&b])
        .query_async(&mut con)
        .await
        .expect("MULTI XACK XDEL EXEC");
    assert_eq!((acked, deleted), (1, 1));
    // XDEL alone.
    let deleted: usize = con.xdel(STREAM, &[&a]).await.expect("XDEL");
    assert_eq!(deleted, 1);
    let left: usize = con.xlen(STREAM).await.expect("XLEN");
    assert_eq!(left, 0);

    // A Lua script: redis::Script sends EVALSHA, and on NOSCRIPT loads it and retries.
    let script = redis::Script::new(ACK_DEL);
    let c: String = con
        .xadd(STREAM, "*", &[("payload", "c")])
        .await
        .expect("XADD c");
    let _: Option<StreamReadReply> = con
        .xread_options(&[STREAM], &[">"], &read_c1)
        .await
        .expect("XREADGROUP c");
    let acked: usize = script
        .key(STREAM)
        .arg(GROUP)
        .arg(&c)
        .invoke_async(&mut con)
        .await
        .expect("EVALSHA ack-and-delete");
    assert_eq!(acked, 1);
    let left: usize = con.xlen(STREAM).await.expect("XLEN");
    assert_eq!(left, 0);
    // Plain EVAL through redis::cmd.
    let sum: i64 = redis::cmd("EVAL")
        .arg("return tonumber(ARGV[1]) + tonumber(ARGV[2])")
        .arg(0)
        .arg(2)
        .arg(3)
        .query_async(&mut con)
        .await
        .expect("EVAL");
    assert_eq!(sum, 5);

    // What must survive the crash: one entry, delivered to c2 and not acknowledged.
    let d: String = con
        .xadd(STREAM, "*", &[("payload", "d")])
        .await
        .expect("XADD d");
    let read_c2 = StreamReadOptions::default().group(GROUP, "c2").count(10);
    let _: Option<StreamReadReply> = con
        .xread_options(&[STREAM], &[">"], &read_c2)
        .await
        .expect("XREADGROUP d");
    let manager = client
        .get_connection_manager()
        .await
        .expect("connection manager");

    server.restart();

    // The multiplexed connection does not reconnect: its next command fails (an I/O error,
    // `is_connection_dropped`).
    let err = con
        .xlen::<_, usize>(STREAM)
        .await
        .expect_err("the old connection died with the server");
    assert!(
        err.is_connection_dropped(),
        "{err:?} (kind {:?})",
        err.kind()
    );
    // A ConnectionManager reconnects by itself (its first command may still see the drop).
    let mut manager = manager;
    let mut left = None;
    for _ in 0..50 {
        match manager.xlen::<_, usize>(STREAM).await {
            Ok(n) => {
                left = Some(n);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    assert_eq!(left, Some(1), "the connection manager did not come back");

    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("a new connection after the restart");
    let range: StreamRangeReply = con.xrange_all(STREAM).await.expect("XRANGE - +");
    assert_eq!(range.ids.len(), 1);
    assert_eq!(range.ids[0].id, d);
    assert_eq!(range.ids[0].get::<String>("payload").as_deref(), Some("d"));
    // The group and its pending entry came back too.
    let detail: StreamPendingCountReply = con
        .xpending_count(STREAM, GROUP, "-", "+", 10)
        .await
        .expect("XPENDING after the restart");
    assert_eq!(detail.ids.len(), 1);
    assert_eq!(detail.ids[0].id, d);
    assert_eq!(detail.ids[0].consumer, "c2");

    // The script cache did not survive: a raw EVALSHA fails with NOSCRIPT, a kind redis-rs
    // knows; redis::Script loads the script again by itself.
    let err = redis::cmd("EVALSHA")
        .arg(script.get_hash())
        .arg(1)
        .arg(STREAM)
        .arg(GROUP)
        .arg(&d)
        .query_async::<usize>(&mut con)
        .await
        .expect_err("the script cache is empty after a restart");
    assert_eq!(err.kind(), ErrorKind::Server(ServerErrorKind::NoScript));
    assert_eq!(err.code(), Some("NOSCRIPT"));
    let acked: RedisResult<usize> = script
        .key(STREAM)
        .arg(GROUP)
        .arg(&d)
        .invoke_async(&mut con)
        .await;
    assert_eq!(acked.expect("EVALSHA, then EVAL after NOSCRIPT"), 1);
    let left: usize = con.xlen(STREAM).await.expect("XLEN");
    assert_eq!(left, 0);
}
