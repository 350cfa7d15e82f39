# Kaldi's utils/parse_options.sh semantics, sourced by every recipe after its defaults:
#   --foo-bar VALUE  sets the already-declared shell variable foo_bar; an unknown option is an error.
#   --config FILE    sources FILE (lines like `foo_bar=value`) before the remaining options.
#   --help           prints the recipe's header comment and its defaults (those "$0" declares
#                    before sourcing this file, and those of any defaults file that added itself
#                    to the array `option_files`).
# Positional arguments are left in "$@".
# A relative path given on the command line (--config and the options named like paths, see
# path_option) is resolved against the CALLER's directory: recipes `cd` to their own dir first, so
# the caller's is $OLDPWD then (or $caller_dir where a recipe sets it). Defaults stay recipe-relative.
# After parsing, --stage/--stop-stage must be integers with stage <= stop-stage.
caller_dir=${caller_dir:-${OLDPWD:-$PWD}}
path_option() { case "$1" in data|exp|gmm_exp|corpus|downloads|lexicon|report|*_dir|*_conf) return 0 ;; esac; return 1; }
from_caller() { case "$1" in /*|"") echo "$1" ;; *) echo "$caller_dir/$1" ;; esac; }
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      self=$0; [ -r "$self" ] || self=$(basename "$0")  # the recipe may have cd'ed into its own dir
      sed -n '2,/^[^#]/{/^#/p}' "$self" | sed 's/^# \{0,1\}//'
      echo "Options (defaults):"
      { sed '/parse_options\.sh/q' "$self"; cat ${option_files[@]+"${option_files[@]}"}; } |
        grep -E '^[a-z_][a-z0-9_]*=' | {
          declare -A seen  # the first declaration wins (the recipe's own, before shared defaults)
          while IFS='=' read -r k v; do
            [ -z "${seen[$k]:-}" ] && echo "  --${k//_/-} $v"; seen[$k]=1
          done; }
      exit 0 ;;
    --config)
      [ $# -ge 2 ] || { echo "$0: --config needs a file" >&2; exit 1; }
      config_file=$(from_caller "$2")
      [ -f "$config_file" ] || { echo "$0: config file $2 not found (looked at $config_file)" >&2; exit 1; }
      . "$config_file"; shift 2 ;;
    --*=*)
      echo "$0: write options as '--name value', not '$1'" >&2; exit 1 ;;
    --*)
      name=$(echo "${1#--}" | tr '-' '_')
      if ! declare -p "$name" >/dev/null 2>&1 || [[ "$name" =~ [^a-z0-9_] ]]; then
        echo "$0: unknown option $1 (see --help)" >&2; exit 1
      fi
      [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 1; }
      value=$2; path_option "$name" && value=$(from_caller "$value")
      printf -v "$name" '%s' "$value"; shift 2 ;;
    *) break ;;
  esac
done
for name in stage stop_stage; do
  if declare -p "$name" >/dev/null 2>&1 && ! [[ "${!name}" =~ ^[0-9]+$ ]]; then
    echo "$0: --${name//_/-} must be a stage number (0, 1, ...), got '${!name}'" >&2; exit 1
  fi
done
if declare -p stage >/dev/null 2>&1 && declare -p stop_stage >/dev/null 2>&1 && [ "$stage" -gt "$stop_stage" ]; then
  echo "$0: --stage $stage is after --stop-stage $stop_stage: nothing to run" >&2; exit 1
fi
