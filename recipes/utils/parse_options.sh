# Kaldi's utils/parse_options.sh semantics, sourced by every recipe after its defaults:
#   --foo-bar VALUE  sets the already-declared shell variable foo_bar; an unknown option is an error.
#   --config FILE    sources FILE (lines like `foo_bar=value`) before the remaining options.
#   --help           prints the recipe's header comment and its defaults.
# Positional arguments are left in "$@".
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'
      echo "Options (defaults):"
      grep -E '^[a-z_][a-z0-9_]*=' "$0" | while IFS='=' read -r k v; do echo "  --${k//_/-} $v"; done
      exit 0 ;;
    --config)
      [ $# -ge 2 ] || { echo "$0: --config needs a file" >&2; exit 1; }
      [ -f "$2" ] || { echo "$0: config file $2 not found" >&2; exit 1; }
      . "$2"; shift 2 ;;
    --*=*)
      echo "$0: write options as '--name value', not '$1'" >&2; exit 1 ;;
    --*)
      name=$(echo "${1#--}" | tr '-' '_')
      if ! declare -p "$name" >/dev/null 2>&1 || [[ "$name" =~ [^a-z0-9_] ]]; then
        echo "$0: unknown option $1 (see --help)" >&2; exit 1
      fi
      [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 1; }
      printf -v "$name" '%s' "$2"; shift 2 ;;
    *) break ;;
  esac
done
