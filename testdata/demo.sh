#!/usr/bin/env bash
# make demo: a hub and its devices on loopback, and a friend's zone, the
# main job end to end.
# Everything lives in a temporary directory that is removed at the end.
set -euo pipefail

BIN=${BIN:-bin}
PORT=${DEMO_PORT:-17443}
WEBPORT=${DEMO_WEB_PORT:-17080}
export PATH="$PWD/$BIN:$PATH"
work=$(mktemp -d /tmp/pzone-demo.XXXXXX)
pids=()

cleanup() {
	for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

step "Create the zone 'alice' (hub on 127.0.0.1:$PORT)"
run pzh init --data "$work/hub" --zone alice --public-addr "127.0.0.1:$PORT"

step "Start the hub: QUIC and TLS+yamux on the same port, and its web dashboard"
pzh serve --data "$work/hub" --listen "127.0.0.1:$PORT" --web "127.0.0.1:$WEBPORT" 2>"$work/hub.log" &
pids+=($!)
if ! pzh wait ready --data "$work/hub" --timeout 15s; then
	echo "the hub did not start; its log says:" >&2
	cat "$work/hub.log" >&2
	echo "(if port $PORT or $WEBPORT is taken, run: DEMO_PORT=another DEMO_WEB_PORT=another make demo)" >&2
	exit 1
fi

step "Invite and pair a phone by a short code (over QUIC) and a laptop by a token (over TCP)"
code=$(pzh invite --data "$work/hub" --device phone --code 2>/dev/null | sed -n 2p)
echo "short code: $code"
run pzp pair --data "$work/phone" --yes --code "$code" "127.0.0.1:$PORT"
token=$(pzh invite --data "$work/hub" --device laptop 2>/dev/null)
run pzp pair --data "$work/laptop" --transport tcp "$token"

step "Both devices keep a session with the hub"
pzp run --data "$work/phone" 2>"$work/phone.log" &
pids+=($!)
pzp run --data "$work/laptop" --transport tcp 2>"$work/laptop.log" &
laptop=$!
pids+=($laptop)
run pzh wait online --data "$work/hub" --timeout 15s phone laptop
pzp wait online --data "$work/phone" --timeout 15s
run pzh devices --data "$work/hub"
run pzp status --data "$work/phone"

step "Zone state: an edit on one device reaches the other through the hub"
# The watch prints the key's value if it has one, then each change: with
# --count 1 it shows the edit whether it subscribes before or after it.
pzp data watch --data "$work/laptop" notes/shopping --count 1 >"$work/watch.out" &
watcher=$!
run pzp data set --data "$work/phone" notes/shopping "milk, eggs"
wait "$watcher"
echo "the laptop's watch saw:"
cat "$work/watch.out"
run pzp data get --data "$work/laptop" notes/shopping
run pzh data list --data "$work/hub"

step "Offline edits: the hub goes away, both devices edit, the hub comes back"
kill -INT "${pids[0]}"
wait "${pids[0]}" || true
pzp wait connecting --data "$work/phone" --timeout 15s
run pzp data set --data "$work/phone" notes/todo "call mum"
run pzp data set --data "$work/laptop" notes/shopping "milk, eggs, bread"
run pzp status --data "$work/laptop"
pzh serve --data "$work/hub" --listen "127.0.0.1:$PORT" --web "127.0.0.1:$WEBPORT" 2>>"$work/hub.log" &
pids[0]=$!
pzp wait synced --data "$work/phone" --timeout 30s
pzp wait synced --data "$work/laptop" --timeout 30s
pzp wait synced --data "$work/phone" --timeout 30s
echo "both devices now hold the same notes:"
run pzp data list --data "$work/phone"
run pzp data list --data "$work/laptop"

step "Services: the laptop serves echo, an app on the phone calls it (directly: both devices can reach each other)"
pzp serve echo --data "$work/laptop" 2>/dev/null &
echo_pid=$!
pids+=($echo_pid)
pzp data watch --data "$work/phone" --bucket apps laptop/pzp --count 1 >/dev/null
run pzp services --data "$work/phone"
run pzp call --data "$work/phone" laptop/echo echo '{"hello":"from the phone"}'
echo "the phone's status shows the path the call took:"
pzp status --data "$work/phone" | sed -n '/^direct:/,$p'
echo "a call to a device that is not there fails at once, saying why:"
pzp call --data "$work/phone" tablet/echo echo 2>&1 || true
kill -INT "$echo_pid"
wait "$echo_pid" || true

step "Sleeping devices: a tablet sleeps when idle; a message for later wakes it"
token=$(pzh invite --data "$work/hub" --device tablet 2>/dev/null)
pzp pair --data "$work/tablet" "$token" >/dev/null
printf '\033[2m$ %s\033[0m\n' "pzp run --data $work/tablet --sleep-after 1s &"
pzp run --data "$work/tablet" --sleep-after 1s 2>"$work/tablet.log" &
tablet=$!
pids+=($tablet)
pzp wait ready --data "$work/tablet" --timeout 15s
pzp listen inbox --data "$work/tablet" --count 1 >"$work/inbox.out" 2>/dev/null &
inbox=$!
pzp data watch --data "$work/phone" --bucket apps tablet/pzp --count 1 >/dev/null
pzp wait asleep --data "$work/tablet" --timeout 15s
run pzh devices --data "$work/hub"
echo "without a time to live, a message for a sleeping device fails at once:"
pzp send --data "$work/phone" tablet/inbox "now?" 2>&1 || true
run pzp send --data "$work/phone" --ttl 1h tablet/inbox "wake up, there is news"
wait "$inbox"
echo "the tablet's inbox got:"
cat "$work/inbox.out"
pzp wait asleep --data "$work/tablet" --timeout 15s
run pzp status --data "$work/tablet"

step "Friends: bob's zone federates with alice's; the phone calls a service on bob's desktop"
BPORT=$((PORT + 1))
run pzh init --data "$work/bobhub" --zone bob --public-addr "127.0.0.1:$BPORT"
pzh serve --data "$work/bobhub" --listen "127.0.0.1:$BPORT" 2>"$work/bobhub.log" &
bobhub=$!
pids+=($bobhub)
pzh wait ready --data "$work/bobhub" --timeout 15s
token=$(pzh invite --data "$work/bobhub" --device desktop 2>/dev/null)
pzp pair --data "$work/desktop" "$token" >/dev/null
pzp run --data "$work/desktop" 2>"$work/desktop.log" &
desktop=$!
pids+=($desktop)
pzp wait online --data "$work/desktop" --timeout 15s
pzp serve echo --data "$work/desktop" 2>/dev/null &
decho=$!
pids+=($decho)
ftoken=$(pzh friend invite --data "$work/bobhub" 2>/dev/null)
echo "bob's friend token: ${ftoken:0:40}…"
run pzh friend accept --data "$work/hub" "$ftoken" --as bob
run pzh wait linked --data "$work/hub" --timeout 15s bob
run pzh friends --data "$work/hub"
pzp data watch --data "$work/phone" --bucket friends --count 1 >/dev/null
pzp data watch --data "$work/desktop" --bucket apps desktop/pzp --count 1 >/dev/null
echo "bob's zone lets other zones use nothing until a rule says so:"
pzp call --data "$work/phone" bob/desktop/echo echo '"hi bob"' 2>&1 || true
run pzh policy add --data "$work/bobhub" --allow --from alice --to desktop/echo --id alice-echo
pzp data watch --data "$work/desktop" --bucket policy alice-echo --count 1 >/dev/null
run pzp services --data "$work/phone" --zone bob
run pzp call --data "$work/phone" bob/desktop/echo echo '{"hello":"from alice'"'"'s phone"}'
echo "the call was signed by the phone; bob's desktop checked it (and the phone the answer):"
pzp status --data "$work/desktop" | grep '^friends:'
kill -INT "$decho"
wait "$decho" || true

step "Streams, SSH-style: the laptop exposes a local TCP service; the phone forwards a port to it through the zone"
if command -v python3 >/dev/null; then
	# The laptop's local service (a stand-in for sshd on 127.0.0.1:22):
	# it answers each line it reads.
	python3 -c '
import socketserver, sys
class H(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(b"laptop service got: " + line)
s = socketserver.TCPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()' >"$work/svc.port" &
	svc=$!
	for _ in $(seq 100); do [ -s "$work/svc.port" ] && break; sleep 0.05; done
	SVC=$(cat "$work/svc.port")
	echo "\$ pzp expose ssh --data laptop --to 127.0.0.1:$SVC"
	pzp expose ssh --data "$work/laptop" --to "127.0.0.1:$SVC" 2>"$work/expose.log" &
	expose=$!
	pzp data watch --data "$work/phone" --bucket apps laptop/pzp --count 1 >/dev/null
	FWD=$((PORT + 2))
	echo "\$ pzp forward --data phone 127.0.0.1:$FWD laptop/ssh"
	pzp forward --data "$work/phone" "127.0.0.1:$FWD" laptop/ssh 2>"$work/forward.log" &
	forward=$!
	for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$FWD") 2>/dev/null && break; sleep 0.05; done
	echo "a TCP client on the phone's port $FWD (as ssh -p $FWD localhost would be):"
	exec 3<>"/dev/tcp/127.0.0.1/$FWD"
	printf 'hello over a stream\n' >&3
	read -r line <&3
	echo "  $line"
	exec 3>&-
	echo "and as an ssh ProxyCommand would use it, stdin and stdout:"
	run pzp connect --data "$work/phone" laptop/ssh <<<"piped through pzp connect"
	kill -INT "$forward" "$expose"
	kill "$svc" # a background python ignores SIGINT
	wait "$forward" "$expose" "$svc" 2>/dev/null || true
	echo "pzp expose logged:"
	cat "$work/expose.log"
else
	echo "(python3 is not installed: it plays the laptop's local service here; skipped)"
fi

step "Revoke the laptop: its session is cut at once and it stops"
run pzh revoke --data "$work/hub" laptop
pzp wait synced --data "$work/phone" --timeout 15s
echo "every device learns of the revocation (certificates bucket):"
run pzp data list --data "$work/phone" --bucket certs
rc=0
wait "$laptop" || rc=$?
echo "laptop's pzp run exited with code $rc:"
tail -n 1 "$work/laptop.log"
run pzh devices --data "$work/hub"
echo "and it cannot come back:"
pzp run --data "$work/laptop" 2>&1 | tail -n 1 || true

step "The web dashboard: an operator, and a one-time login to it"
run pzh operator add --data "$work/hub" alice <<<"correct horse battery staple"
link=$(pzh web login --data "$work/hub" alice 2>/dev/null)
echo "dashboard: http://127.0.0.1:$WEBPORT/ (operator alice, password: correct horse battery staple)"
echo "one-time login (works once, for 10 minutes): $link"
if [ -t 0 ]; then
	read -r -p "open it in a browser on this machine; press Enter to stop the hub and the devices " _
fi
run pzh web sessions --data "$work/hub"

step "Shut down cleanly"
kill -INT "${pids[0]}" "${pids[1]}" "$tablet" "$desktop" "$bobhub"
wait "${pids[0]}" "${pids[1]}" "$tablet" "$desktop" "$bobhub"
echo "hub exited 0; its log:"
cat "$work/hub.log"
pids=()
printf '\n\033[1mdemo done\033[0m\n'
