/*
 * lua.c: flashsale's Lua scripts for Redis, kept as readable src/lua/NAME.lua
 * files and compiled in as C strings (scripts/lua2c.sh).
 */
#include "flashsale.h"

#include "lua_scripts.h"

FsScript	fs_script_decrement = {"decrement", fs_lua_decrement};
FsScript	fs_script_giveback = {"giveback", fs_lua_giveback};
FsScript	fs_script_reload = {"reload", fs_lua_reload};
FsScript	fs_script_info = {"info", fs_lua_info};
FsScript	fs_script_settle = {"settle", fs_lua_settle};
FsScript	fs_script_fix = {"fix", fs_lua_fix};
