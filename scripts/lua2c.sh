#!/bin/sh
# Turns src/lua/NAME.lua files into C string constants fs_lua_NAME, with the
# SHA1 Redis knows each script by in fs_lua_NAME_sha (build step).
set -e
echo "/* generated from src/lua/NAME.lua by scripts/lua2c.sh: do not edit */"
for f in "$@"; do
    name=$(basename "$f" .lua)
    echo "static const char fs_lua_${name}[] ="
    sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/\t"/' -e 's/$/\\n"/' "$f"
    printf "\t;\n"
    printf 'static const char fs_lua_%s_sha[] = "%s";\n' "$name" "$(sha1sum < "$f" | cut -c1-40)"
done
