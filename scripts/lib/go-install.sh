# Sourced by the ensure scripts that build a pinned Go program into .tools/ (ensure-k8s-tools.sh,
# ensure-promtool.sh). The sourcing script sets `tools` (the .tools folder) and defines say().

go_bin=$(command -v go 2>/dev/null || true)
if [ -z "$go_bin" ] && [ -x /usr/local/go/bin/go ]; then
  go_bin=/usr/local/go/bin/go
fi

# need_go WHAT: stop with a message when no Go toolchain is there to install WHAT.
need_go() {
  if [ -z "$go_bin" ]; then
    say "Go is needed to install $1 (go install from the Go module proxy) and is not on PATH;"
    say "install Go 1.22 or newer for kustomize and kubeconform, 1.26.7 or newer for promtool"
    say "(Debian 12's golang-go is too old for either)"
    exit 1
  fi
}

# go_install NAME MODULE VERSION [GO BUILD FLAGS...]: the program NAME of MODULE@VERSION into
# .tools/NAME-VERSION/bin, once; prints `NAME=<its path>`.
go_install() {
  local name=$1 module=$2 version=$3
  shift 3
  local dest="$tools/$name-$version"
  if [ ! -x "$dest/bin/$name" ]; then
    need_go "$name"
    say "installing $name $version (go install $* $module@$version)"
    mkdir -p "$dest"
    # -modcacherw: a module cache that can be deleted without chmod; CGO off: static binaries,
    # no C compiler needed; GOTOOLCHAIN=local: the Go on the machine, never one downloaded.
    # Into a folder beside the final one, moved there whole: an interrupted build leaves no
    # half-installed program that a later run would take as done.
    rm -rf "$dest/bin.partial"
    GOBIN="$dest/bin.partial" GOFLAGS=-modcacherw CGO_ENABLED=0 GOTOOLCHAIN=local \
      "$go_bin" install "$@" "$module@$version" >&2
    rm -rf "$dest/bin"
    mv "$dest/bin.partial" "$dest/bin"
  fi
  printf '%s=%s\n' "$name" "$dest/bin/$name"
}
