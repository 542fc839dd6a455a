"""redis-py's cluster client pointed at slotproxy: it must see a healthy
one-node cluster that owns every slot, and work for plain commands, hash tags,
multi-key commands and pipelines. Run by tests/fanout.rs with the proxy port.

Both redis-py 8's default protocol (RESP3) and RESP2 are checked.
"""
import sys

from redis.cluster import RedisCluster

port = int(sys.argv[1])
for proto in (None, 2):
    kw = {} if proto is None else {"protocol": proto}
    rc = RedisCluster(host="127.0.0.1", port=port, decode_responses=True, **kw)

    info = rc.cluster_info()
    assert info["cluster_state"] == "ok", info
    assert int(info["cluster_slots_assigned"]) == 16384, info
    nodes = rc.get_nodes()
    assert len(nodes) == 1 and nodes[0].port == port, nodes

    assert rc.set("py:a", "1")
    assert rc.get("py:a") == "1"
    assert rc.set("{user:7}.name", "ann") and rc.set("{user:7}.age", "40")
    assert rc.mget("{user:7}.name", "{user:7}.age") == ["ann", "40"]
    assert rc.mget_nonatomic("py:a", "{user:7}.name", "missing") == ["1", "ann", None]
    assert rc.delete("py:a", "{user:7}.name") == 2
    assert rc.keyslot("foo") == 12182

    pipe = rc.pipeline()
    for i in range(50):
        pipe.set(f"py:p:{i}", i)
    for i in range(50):
        pipe.get(f"py:p:{i}")
    out = pipe.execute()
    assert out[:50] == [True] * 50, out
    assert out[50:] == [str(i) for i in range(50)], out
    print(f"redis-py RedisCluster protocol {proto or 'default'} OK")
