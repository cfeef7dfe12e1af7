/*
 * lua.c: flashsale's Lua scripts for Redis, kept as readable src/lua/NAME.lua
 * files and compiled in as C strings (scripts/lua2c.sh).
 */
#include "flashsale.h"

#include "lua_scripts.h"

FsScript	fs_script_lease = {"lease", fs_lua_lease, fs_lua_lease_sha};
FsScript	fs_script_giveback = {"giveback", fs_lua_giveback, fs_lua_giveback_sha};
FsScript	fs_script_rebuild = {"rebuild", fs_lua_rebuild, fs_lua_rebuild_sha};
FsScript	fs_script_info = {"info", fs_lua_info, fs_lua_info_sha};
FsScript	fs_script_lock_acquire = {"lock_acquire", fs_lua_lock_acquire, fs_lua_lock_acquire_sha};
FsScript	fs_script_lock_release = {"lock_release", fs_lua_lock_release, fs_lua_lock_release_sha};
FsScript	fs_script_lock_renew = {"lock_renew", fs_lua_lock_renew, fs_lua_lock_renew_sha};
FsScript	fs_script_lock_check = {"lock_check", fs_lua_lock_check, fs_lua_lock_check_sha};
FsScript	fs_script_lock_info = {"lock_info", fs_lua_lock_info, fs_lua_lock_info_sha};
FsScript	fs_script_throttle = {"throttle", fs_lua_throttle, fs_lua_throttle_sha};
FsScript	fs_script_throttle_refund = {"throttle_refund", fs_lua_throttle_refund, fs_lua_throttle_refund_sha};
FsScript	fs_script_once_release = {"once_release", fs_lua_once_release, fs_lua_once_release_sha};
