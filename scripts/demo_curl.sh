#!/usr/bin/env bash
# The curl demos: plain events, a named event, JSON events and OpenAI chunks.
# Each demo prints what it shows and the command, then streams the reply live.
#
#   tokenstream serve                 # in another terminal
#   scripts/demo_curl.sh [BASE_URL]   # default http://127.0.0.1:8080
set -euo pipefail

BASE=${1:-http://127.0.0.1:8080}
BASE=${BASE%/}

if ! curl -sSf -o /dev/null "$BASE/healthz"; then
  echo "No tokenstream server at $BASE. Start one with: tokenstream serve" >&2
  exit 1
fi

bold=$'\033[1m' dim=$'\033[2m' reset=$'\033[0m'
if [ ! -t 1 ]; then bold='' dim='' reset=''; fi

# demo TITLE EXPLANATION CURL-ARGS...: explain, show the command, run it.
demo() {
  local title=$1 explanation=$2
  shift 2
  printf '\n%s== %s ==%s\n%s\n' "$bold" "$title" "$reset" "$explanation"
  printf '%s$ curl' "$dim"
  local arg
  for arg in "$@"; do
    if [[ $arg == -* ]]; then printf ' %s' "$arg"; else printf " '%s'" "$arg"; fi
  done
  printf '%s\n\n' "$reset"
  curl "$@"
  printf '\n'
}

demo "Plain text events" \
"GET /v1/stream sends each token as one 'data:' line with an 'id:', and a blank line ends
each event. The last event is the sentinel 'data: [DONE]' (id 'done'). Default profile." \
  -sSN "$BASE/v1/stream?prompt=hello"

demo "A named event" \
"With event=custom every event starts with 'event: custom'. A browser EventSource then
delivers it to addEventListener('custom', ...) instead of onmessage. Profile 'fast'." \
  -sSN "$BASE/v1/stream?prompt=hello&event=custom&profile=fast"

demo "JSON events" \
"format=json sends {\"index\", \"token\", \"tokens\"} per event. A Chinese character's UTF-8
bytes can span several tokens: such a piece is held until it is whole, so its 'tokens' is
then 2 or 3 and no event carries half a character. Profile 'slow' (12 tokens/s, 1.5 s TTFT)." \
  -sSN "$BASE/v1/stream?prompt=chinese&format=json&profile=slow"

demo "OpenAI chat.completion.chunk stream" \
"POST /v1/chat/completions with \"stream\": true answers as the OpenAI API does: a first
chunk with the role, one chunk per content delta, a chunk with finish_reason, a usage chunk
(choices: []) because of include_usage, then 'data: [DONE]'." \
  -sSN "$BASE/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model": "tokenstream-1", "messages": [{"role": "user", "content": "emoji"}], "stream": true, "stream_options": {"include_usage": true}}'
