#!/usr/bin/env bash
# Kaldi-style option parsing for recipe scripts: `. tools/parse_options.sh` after setting
# defaults turns `--stage 3 --test-speakers theo` into stage=3 test_speakers=theo. Only
# variables that already exist may be set (a typo is an error); `--help` prints them.
# What remains after the options is left in "$@". With `passthrough_unknown=true` set
# before sourcing, unknown options are collected (with their values) into the array
# `passthrough` instead, for a run.sh to hand on to tools/asr.sh. Variables named in
# `append_options` (set before sourcing) add to their value instead of replacing it, so a
# recipe's own --train-args and the user's both count.
passthrough=()

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      echo "usage: $0 [options] ${help_args:-}"
      echo "options (current values):"
      for v in $(compgen -v); do
        case "$v" in [a-z]*) [ -n "${!v+x}" ] && [[ "$(declare -p "$v" 2>/dev/null)" == "declare --"* ]] && echo "  --${v//_/-} ${!v}";; esac
      done
      exit 0 ;;
    --*=*)
      name="${1%%=*}"; value="${1#*=}"; shift ;;
    --*)
      name="$1"
      if [ $# -lt 2 ]; then echo "$0: option $name needs a value" >&2; exit 1; fi
      value="$2"; shift 2 ;;
    *) break ;;
  esac
  var="${name#--}"; var="${var//-/_}"
  if [ -z "${!var+x}" ] || [ "$var" = passthrough ] || [ "$var" = passthrough_unknown ]; then
    if [ "${passthrough_unknown:-false}" = true ]; then passthrough+=("$name" "$value"); continue; fi
    echo "$0: unknown option $name" >&2; exit 1
  fi
  if [[ " ${append_options:-} " == *" $var "* ]] && [ -n "${!var}" ]; then
    printf -v "$var" '%s %s' "${!var}" "$value"
  else
    printf -v "$var" '%s' "$value"
  fi
done
true
