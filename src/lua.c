/*
 * lua.c: flashsale's Lua scripts for Redis, kept as readable src/lua/NAME.lua
 * files and compiled in as C strings (scripts/lua2c.sh).
 */
#include "flashsale.h"

#include "lua_scripts.h"

FsScript	fs_script_decrement = {"decrement", fs_lua_decrement, fs_lua_decrement_sha};
FsScript	fs_script_giveback = {"giveback", fs_lua_giveback, fs_lua_giveback_sha};
FsScript	fs_script_reload = {"reload", fs_lua_reload, fs_lua_reload_sha};
FsScript	fs_script_info = {"info", fs_lua_info, fs_lua_info_sha};
FsScript	fs_script_settle = {"settle", fs_lua_settle, fs_lua_settle_sha};
FsScript	fs_script_fix = {"fix", fs_lua_fix, fs_lua_fix_sha};
FsScript	fs_script_lock_acquire = {"lock_acquire", fs_lua_lock_acquire, fs_lua_lock_acquire_sha};
FsScript	fs_script_lock_release = {"lock_release", fs_lua_lock_release, fs_lua_lock_release_sha};
FsScript	fs_script_lock_renew = {"lock_renew", fs_lua_lock_renew, fs_lua_lock_renew_sha};
FsScript	fs_script_lock_check = {"lock_check", fs_lua_lock_check, fs_lua_lock_check_sha};
FsScript	fs_script_lock_info = {"lock_info", fs_lua_lock_info, fs_lua_lock_info_sha};
