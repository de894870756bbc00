/* lua_scripts.h - the embedded Lua transition scripts (generated lua_scripts.c). */
#ifndef SLUICE_LUA_SCRIPTS_H
#define SLUICE_LUA_SCRIPTS_H

struct sl_lua_script {
	const char *name;
	const char *source;
};

/* Ends with an entry whose name is NULL. */
extern const struct sl_lua_script sl_lua_scripts[];

#endif
