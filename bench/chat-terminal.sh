#!/usr/bin/env bash
# `leanlm chat` in a real terminal (tmux): two turns, Ctrl-C in the middle of an answer,
# a third turn after it, /save, then Ctrl-C at the prompt exits. Prints the screen and
# PASS or FAIL for each step.
#
#   bench/chat-terminal.sh [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v tmux >/dev/null || { echo "tmux is needed (apt-get install -y tmux)" >&2; exit 1; }
MODEL=${1:-$(scripts/fetch-model.sh)}
cargo build --release --bin leanlm >&2
S=leanlm-chat-$$
SAVE=$(mktemp -u /tmp/leanlm-chat-XXXX.json)
fails=0
screen() { tmux capture-pane -p -t "$S" -S -200; }
# Wait until the screen matches a pattern (at most $2 seconds).
wait_for() {
  for _ in $(seq 1 $(( ${2:-60} * 5 ))); do screen | grep -q -- "$1" && return 0; sleep 0.2; done
  return 1
}
check() { if "$@"; then echo "PASS: $label"; else echo "FAIL: $label"; fails=$((fails + 1)); fi; }

tmux new-session -d -s "$S" -x 160 -y 50 "target/release/leanlm -t 2 chat -m '$MODEL' -n 200 -c 2048; echo EXITED \$?; sleep 30"
trap 'tmux kill-session -t "$S" 2>/dev/null || true; rm -f "$SAVE"' EXIT

label="the chat starts and prompts"; check wait_for '^>' 60
tmux send-keys -t "$S" "What is the capital of France?" Enter
label="first answer, then a new prompt"; check wait_for 'reused\]' 120
tmux send-keys -t "$S" "Tell me a long story about it." Enter
sleep 1.5
tmux send-keys -t "$S" C-c
label="Ctrl-C stops the answer"; check wait_for '(stopped)' 30
label="the second turn reused the first turn's tokens"; check bash -c "tmux capture-pane -p -t '$S' -S -200 | grep -E '[1-9][0-9]* reused\]' | tail -1 | grep -q ."
tmux send-keys -t "$S" "Thank you." Enter
sleep 0.5
for _ in $(seq 1 600); do [ "$(screen | grep -c 'reused\]')" -ge 3 ] && break; sleep 0.2; done
label="a third turn is answered after the interruption"; check test "$(screen | grep -c 'reused\]')" -ge 3
tmux send-keys -t "$S" "/save $SAVE" Enter
label="/save writes the conversation"; check wait_for 'saved 6 messages' 10
tmux send-keys -t "$S" C-c
label="Ctrl-C at the prompt exits"; check wait_for 'EXITED 130' 10
echo "----- screen -----"
screen | sed '/^$/N;/^\n$/D'
echo "------------------"
[ -f "$SAVE" ] && python3 -c "import json,sys; m=json.load(open('$SAVE'))['messages']; print([x['role'] for x in m])"
echo "$fails failed"
exit $(( fails > 0 ))
