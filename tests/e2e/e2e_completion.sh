#!/bin/sh
# The bash completion (contrib/qvmctl.bash-completion): verbs and their options come from qvmctl
# help, so a verb or option added to the table completes without touching the script; VM names,
# snapshot tags and backup ids from the daemon; an option's value is not taken for a positional.
. "$(dirname "$0")/lib.sh"

fw_vm web1 q35
fw_vm db1 q35
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }

# comp WORDS...: the completions bash would offer for the last word (may be empty).
comp() {
	PATH="$BIN_DIR/bin:$PATH" bash -c '
		. "$0"
		COMP_WORDS=("$@")
		COMP_CWORD=$(($# - 1))
		_qvmctl
		printf "%s\n" "${COMPREPLY[@]}"' "$SRC_DIR/contrib/qvmctl.bash-completion" "$@"
}
has() { printf '%s\n' "$1" | grep -qx -- "$2"; }

out=$(comp qvmctl "")
check "every verb of the table: backup-prune, console, reboot, apply ..." \
	sh -c 'for v in list backup-prune reboot restart help events apply diff snapshot; do printf "%s\n" "$0" | grep -qx "$v" || exit 1; done' "$out"
check "only verbs ($(printf '%s' "$out" | head -n 3 | tr '\n' ' '))" sh -c '! printf "%s\n" "$0" | grep -q "^usage\|^ \|:$"' "$out"
out=$(comp qvmctl re)
check "a prefix: reboot, reload, reset, restart, restore, resume, revert" \
	sh -c '[ "$(printf "%s\n" "$0" | sort | tr "\n" " ")" = "reboot reload reset restart restore resume revert " ]' "$out"
out=$(comp qvmctl backup web1 --)
check "backup's options from its help (--incremental, --keep, --parallel)" \
	sh -c 'for o in --full --incremental --to --no-wait --all --parallel --keep --help; do printf "%s\n" "$0" | grep -qx -- "$o" || exit 1; done' "$out"
out=$(comp qvmctl events --)
check "events --follow" has "$out" --follow
out=$(comp qvmctl status "")
check "VM names from the daemon" sh -c '[ "$(printf "%s\n" "$0" | sort | tr "\n" " ")" = "db1 web1 " ]' "$out"
out=$(comp qvmctl -s "$SOCK" reboot --timeout 5s "")
check "an option's value is not a positional: still the VM name" has "$out" web1
out=$(comp qvmctl restart web1 --timeout "")
check "no completion for a value" [ -z "$out" ]
out=$(comp qvmctl help re)
check "help completes verbs" has "$out" reboot
finish
