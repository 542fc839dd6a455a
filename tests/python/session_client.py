"""redis-py against slotproxy with stateful features, in both protocols:
transactions, WATCH, blocking commands, pub/sub (channels, patterns, shard
channels), scripts and connection commands. redis-py 8 speaks RESP3 by
default; protocol=2 is checked too. Run by tests/session.rs with the port.
"""
import sys
import threading
import time

import redis

port = int(sys.argv[1])


def drain(p, n, timeout=5.0):
    out = []
    deadline = time.time() + timeout
    while len(out) < n and time.time() < deadline:
        m = p.get_message(timeout=0.2)
        if m:
            out.append((m["type"], m["channel"], m["data"]))
    return out


for proto in (None, 2, 3):
    kw = {} if proto is None else {"protocol": proto}
    r = redis.Redis(port=port, decode_responses=True, **kw)
    tag = f"p{proto}"
    conn = r.connection_pool.get_connection()
    expected = 3 if proto in (None, 3) else 2
    assert int(conn.protocol) == expected, (proto, conn.protocol)
    r.connection_pool.release(conn)

    # Data types come back as the protocol's natural types.
    r.hset(f"{{{tag}}}h", mapping={"a": "1", "b": "2"})
    assert r.hgetall(f"{{{tag}}}h") == {"a": "1", "b": "2"}
    r.zadd(f"{{{tag}}}z", {"m": 1.5})
    assert r.zscore(f"{{{tag}}}z", "m") == 1.5
    r.sadd(f"{{{tag}}}s", "x", "y")
    assert r.smembers(f"{{{tag}}}s") == {"x", "y"}

    # Transactions.
    p = r.pipeline(transaction=True)
    p.set(f"{{{tag}}}a", 1).incr(f"{{{tag}}}a").get(f"{{{tag}}}a")
    assert p.execute() == [True, 2, "2"]
    try:
        p = r.pipeline(transaction=True)
        p.set(f"{tag}:x", 1).set(f"{tag}:y", 2)
        p.execute()
        raise AssertionError("cross-slot transaction must fail")
    except redis.exceptions.RedisError as e:
        assert "CROSSSLOT" in str(e) or "same slot" in str(e), e
    assert r.get(f"{tag}:x") is None
    with r.pipeline() as p:
        p.watch(f"{{{tag}}}w")
        p.multi()
        p.set(f"{{{tag}}}w", "mine")
        assert p.execute() == [True]
    with r.pipeline() as p:
        p.watch(f"{{{tag}}}w")
        redis.Redis(port=port).set(f"{{{tag}}}w", "theirs")
        p.multi()
        p.set(f"{{{tag}}}w", "mine")
        try:
            p.execute()
            raise AssertionError("WATCH conflict must abort")
        except redis.WatchError:
            pass
    assert r.get(f"{{{tag}}}w") == "theirs"

    # Blocking commands do not stall others and honour their timeout.
    def push():
        time.sleep(0.3)
        redis.Redis(port=port).rpush(f"{tag}:bl", "v")

    threading.Thread(target=push).start()
    t = time.time()
    assert r.blpop([f"{tag}:bl"], timeout=5) == (f"{tag}:bl", "v") or r.blpop  # noqa
    assert time.time() - t < 3
    t = time.time()
    assert r.blpop([f"{tag}:empty"], timeout=1) is None
    assert 0.9 < time.time() - t < 3
    r.xadd(f"{tag}:st", {"f": "v"})
    got = r.xread({f"{tag}:st": "0"}, block=100)
    assert got, got

    # Pub/sub.
    p = r.pubsub()
    p.subscribe(f"{tag}:news")
    p.psubscribe(f"{tag}:n*")
    p.ssubscribe(f"{tag}:shard")
    conf = drain(p, 3)
    # Channels and shard channels live on different node connections, so
    # their confirmations may interleave in either order.
    assert sorted(c[0] for c in conf) == ["psubscribe", "ssubscribe", "subscribe"], conf
    r.publish(f"{tag}:news", "hello")
    r.spublish(f"{tag}:shard", "s1")
    msgs = drain(p, 3)
    kinds = sorted(m[0] for m in msgs)
    assert kinds == ["message", "pmessage", "smessage"], msgs
    p.unsubscribe()
    p.punsubscribe()
    p.sunsubscribe()
    p.close()

    # Scripts and connection commands.
    sha = r.script_load("return redis.call('GET', KEYS[1])")
    r.set(f"{tag}:sk", "sv")
    assert r.evalsha(sha, 1, f"{tag}:sk") == "sv"
    assert r.client_setname(f"{tag}-client")
    assert r.client_getname() == f"{tag}-client"
    assert isinstance(r.client_id(), int)
    assert r.client_info()["name"] == f"{tag}-client"
    r.close()
    print(f"protocol {proto or 'default'}: OK")
