#!/bin/sh
# Turns src/lua/NAME.lua files into C string constants fs_lua_NAME (build step).
set -e
echo "/* generated from src/lua/NAME.lua by scripts/lua2c.sh: do not edit */"
for f in "$@"; do
    name=$(basename "$f" .lua)
    echo "static const char fs_lua_${name}[] ="
    sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/\t"/' -e 's/$/\\n"/' "$f"
    printf "\t;\n"
done
