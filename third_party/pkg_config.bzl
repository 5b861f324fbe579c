"""pkg_config_repository: wraps system libraries found by pkg-config in a cc_library.

Bazel 4.2.3 from Debian builds offline; the system -dev packages provide the
libraries. Headers are under /usr/include (the compiler's default search path),
so the wrapper only carries compile definitions and link flags.
"""

def _pkg_config_repository_impl(ctx):
    pkg_config = ctx.which("pkg-config")
    if pkg_config == None:
        fail("pkg-config not found: apt-get install pkg-config")
    result = ctx.execute([pkg_config, "--libs"] + ctx.attr.modules)
    if result.return_code != 0:
        fail("pkg-config --libs %s failed: %s" % (" ".join(ctx.attr.modules), result.stderr))
    linkopts = result.stdout.strip().split(" ") + ctx.attr.extra_linkopts
    cflags = ctx.execute([pkg_config, "--cflags"] + ctx.attr.modules).stdout.strip()
    defines = [f[2:] for f in cflags.split(" ") if f.startswith("-D")]
    ctx.file("WORKSPACE", "workspace(name = \"%s\")\n" % ctx.name)
    ctx.file("BUILD", """
cc_library(
    name = "lib",
    defines = {defines},
    linkopts = {linkopts},
    visibility = ["//visibility:public"],
)
""".format(defines = repr(defines), linkopts = repr([o for o in linkopts if o])))

pkg_config_repository = repository_rule(
    implementation = _pkg_config_repository_impl,
    attrs = {
        "modules": attr.string_list(mandatory = True),
        "extra_linkopts": attr.string_list(),
    },
    local = True,
)
