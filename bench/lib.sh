# Shared by the benchmarks that attack a daemon from a second namespace
# (bench/api, bench/drops, bench/notify, bench/stream). Sourced, not run.

# The release binaries (built unless VOIPWALL_BIN and SIP_SEND_BIN name
# prebuilt ones): sets $vw and $send.
bench_binaries() {
  if [ -z "${VOIPWALL_BIN:-}" ]; then
    cargo build --release --quiet -p voipwall
    cargo build --release --quiet -p voipwall-sys --example sip_send
  fi
  vw=${VOIPWALL_BIN:-$PWD/target/release/voipwall}
  send=${SIP_SEND_BIN:-$PWD/target/release/examples/sip_send}
}

# pair_namespaces PBX ATT: two namespaces joined by a veth pair `v0`, the
# PBX at 203.0.113.1, the attacker at 203.0.113.2; sources sip_send forges
# from 198.18.0.0/15 are routed back to the attacker (no reverse-path
# filter), so all traffic stays between the two.
pair_namespaces() {
  local pbx=$1 att=$2 n
  ip netns add "$pbx"; ip netns add "$att"
  ip link add v0 netns "$pbx" type veth peer name v0 netns "$att"
  ip -n "$pbx" addr add 203.0.113.1/24 dev v0; ip -n "$att" addr add 203.0.113.2/24 dev v0
  for n in "$pbx" "$att"; do ip -n "$n" link set v0 up; ip -n "$n" link set lo up; done
  ip netns exec "$pbx" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.v0.rp_filter=0
  ip -n "$pbx" route add 198.18.0.0/15 via 203.0.113.2
}

# ban_latency SENT EVENTS: packet → ban-live latency of each source
# sip_send logged (VOIPWALL_SEND_LOG) against the daemon's ban events
# (`voipwall --json events`): one JSON line, bans, p50_us, p99_us.
ban_latency() {
  python3 - "$1" "$2" <<'PY'
import json, sys
sent = dict(l.split() for l in open(sys.argv[1]))
ev = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
lat = sorted(e["live_us"] - int(sent[e["offender"]]) for e in ev if e.get("kind") == "ban" and e.get("offender") in sent)
p = lambda q: lat[min(len(lat) - 1, round((len(lat) - 1) * q))]
print(json.dumps({"bans": len(lat), "of": len(sent), "p50_us": p(0.5), "p99_us": p(0.99)}))
PY
}
