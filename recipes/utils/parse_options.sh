# Kaldi's utils/parse_options.sh semantics, sourced by every recipe after its defaults:
#   --foo-bar VALUE  sets the already-declared shell variable foo_bar; an unknown option is an error.
#   --config FILE    sources FILE (lines like `foo_bar=value`) before the remaining options.
#   --help           prints the recipe's header comment and its defaults (those "$0" declares
#                    before sourcing this file, and those of any defaults file that added itself
#                    to the array `option_files`).
# Positional arguments are left in "$@".
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
