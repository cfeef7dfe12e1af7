/*
 * tls.c: TLS towards Redis (flashsale.redis_tls), where the platform's
 * hiredis has it: hiredis 1.x with hiredis_ssl (Debian 13).  hiredis 0.14
 * (Debian 12) has no TLS: there turning it on is refused (0A000).
 *
 * redis.c connects the socket; this file makes the TLS session for it,
 * hands it to hiredis (which reads and writes through it from then on) and
 * makes the handshake step by step, because the socket is non-blocking:
 * fs_tls_handshake says what to wait for and redis.c waits for it (bounded
 * by the connect deadline, interruptible), so no command is sent before
 * the server is verified.
 *
 * Verification: the server's certificate must chain to
 * flashsale.redis_tls_ca_file and name the host connected to (a DNS name,
 * or an IP address in its subjectAltName), or flashsale.redis_tls_server_name
 * when set; there is no setting to skip it.  A client certificate and key
 * (flashsale.redis_tls_cert_file, _key_file) are sent when set, for a Redis
 * with tls-auth-clients.
 */
#include "flashsale.h"

#include <arpa/inet.h>
#include <hiredis/hiredis.h>

#include "storage/latch.h"
#include "utils/guc.h"

#ifdef FS_HAVE_TLS
#include <hiredis/hiredis_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#endif

bool		fs_redis_tls = false;
static char *ca_file = NULL;
static char *cert_file = NULL;
static char *key_file = NULL;
static char *server_name = NULL;

/* a string for the settings that open a connection (redis.c reopens when it changes) */
char *
fs_tls_settings(void)
{
	if (!fs_redis_tls)
		return pstrdup("");
	return psprintf("tls|%s|%s|%s|%s", ca_file ? ca_file : "", cert_file ? cert_file : "",
					key_file ? key_file : "", server_name ? server_name : "");
}

static bool
check_redis_tls(bool *newval, void **extra, GucSource source)
{
#ifndef FS_HAVE_TLS
	if (*newval)
	{
		GUC_check_errcode(ERRCODE_FEATURE_NOT_SUPPORTED);
		GUC_check_errmsg("flashsale was built without TLS");
		GUC_check_errdetail("It was built with hiredis %d.%d, which has no TLS; hiredis 1.x with "
							"hiredis_ssl has it (Debian 13: libhiredis-dev).",
							HIREDIS_MAJOR, HIREDIS_MINOR);
		return false;
	}
#endif
	return true;
}

void
fs_tls_init(void)
{
	DefineCustomBoolVariable("flashsale.redis_tls",
							 "Connect to Redis (and the sentinels) over TLS.",
							 "Needs flashsale built with hiredis 1.x and hiredis_ssl.",
							 &fs_redis_tls, false, PGC_SUSET, 0, check_redis_tls, NULL, NULL);
	DefineCustomStringVariable("flashsale.redis_tls_ca_file",
							   "CA certificates (PEM) the Redis server's certificate must chain to.",
							   "Empty: the system's default CA store.",
							   &ca_file, "", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("flashsale.redis_tls_cert_file",
							   "Client certificate (PEM) for a Redis with tls-auth-clients.",
							   NULL, &cert_file, "", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("flashsale.redis_tls_key_file",
							   "Private key (PEM) of flashsale.redis_tls_cert_file.",
							   NULL, &key_file, "", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("flashsale.redis_tls_server_name",
							   "Name the Redis server's certificate must carry (and SNI).",
							   "Empty: the host connected to.",
							   &server_name, "", PGC_SUSET, 0, NULL, NULL, NULL);
}

#ifdef FS_HAVE_TLS

struct FsTls
{
	SSL		   *ssl;
	bool		attached;		/* hiredis owns ssl (and frees it with its context) */
};

/* OpenSSL's reason for the last failure, for an errdetail */
static char *
ssl_reason(const char *what)
{
	unsigned long e = ERR_get_error();
	char		buf[256];

	if (e == 0)
		return pstrdup(what);
	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return psprintf("%s: %s", what, buf);
}

/* A TLS session for a connection to host, verifying what the settings say. */
FsTls *
fs_tls_begin(const char *host, char **err)
{
	static bool initialized = false;
	SSL_CTX    *ctx;
	SSL		   *ssl;
	const char *name = server_name && server_name[0] ? server_name : host;
	unsigned char addr[16];
	bool		is_ip = inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
	FsTls	   *t;

	if (!initialized)
	{
		redisInitOpenSSL();
		initialized = true;
	}
	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
	{
		*err = ssl_reason("TLS: could not make a context");
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (!(ca_file && ca_file[0] ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
		  : SSL_CTX_set_default_verify_paths(ctx)))
	{
		*err = ssl_reason(psprintf("TLS: could not load the CA file \"%s\"", ca_file));
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (cert_file && cert_file[0] &&
		(SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1 ||
		 SSL_CTX_use_PrivateKey_file(ctx, key_file && key_file[0] ? key_file : cert_file,
									 SSL_FILETYPE_PEM) != 1))
	{
		*err = ssl_reason(psprintf("TLS: could not load the client certificate \"%s\" or its key",
								   cert_file));
		SSL_CTX_free(ctx);
		return NULL;
	}
	ssl = SSL_new(ctx);
	SSL_CTX_free(ctx);			/* the session keeps its reference */
	if (ssl == NULL)
	{
		*err = ssl_reason("TLS: could not make a session");
		return NULL;
	}
	if (!is_ip)
		SSL_set_tlsext_host_name(ssl, name);
	if (!(is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name)
		  : SSL_set1_host(ssl, name)))
	{
		*err = ssl_reason("TLS: could not set the name to verify");
		SSL_free(ssl);
		return NULL;
	}
	t = palloc(sizeof(FsTls));
	t->ssl = ssl;
	t->attached = false;
	return t;
}

/* Why the server's certificate was refused. */
static char *
verify_failure(FsTls *t)
{
	return psprintf("TLS: the server's certificate was refused: %s",
					X509_verify_cert_error_string(SSL_get_verify_result(t->ssl)));
}

/*
 * Hand the session to hiredis, on ctx's connected socket: hiredis starts the
 * handshake (non-blocking: it returns at once) and from then on reads and
 * writes through the session, which it frees with its context.
 */
bool
fs_tls_attach(FsTls *t, redisContext *ctx, char **err)
{
	if (redisInitiateSSL(ctx, t->ssl) != REDIS_OK)
	{
		/*
		 * On loopback the whole handshake can happen in hiredis' first
		 * SSL_connect: say why, as fs_tls_handshake does (the session is
		 * still ours)
		 */
		if (SSL_get_verify_result(t->ssl) != X509_V_OK)
			*err = verify_failure(t);
		else
			*err = psprintf("TLS: %s", ctx->errstr);
		return false;
	}
	t->attached = true;
	return true;
}

/*
 * One step of the handshake: 0 when made, WL_SOCKET_READABLE or
 * WL_SOCKET_WRITEABLE to wait for, -1 (and *err) when it failed.
 */
int
fs_tls_handshake(FsTls *t, char **err)
{
	int			rc;

	ERR_clear_error();
	rc = SSL_do_handshake(t->ssl);
	if (rc == 1)
		return 0;
	switch (SSL_get_error(t->ssl, rc))
	{
		case SSL_ERROR_WANT_READ:
			return WL_SOCKET_READABLE;
		case SSL_ERROR_WANT_WRITE:
			return WL_SOCKET_WRITEABLE;
		default:
			if (SSL_get_verify_result(t->ssl) != X509_V_OK)
				*err = verify_failure(t);
			else
				*err = ssl_reason("TLS: the handshake failed");
			return -1;
	}
}

/* Done with t: the session is freed unless hiredis owns it. */
void
fs_tls_end(FsTls *t)
{
	if (!t->attached)
		SSL_free(t->ssl);
	pfree(t);
}

#else							/* !FS_HAVE_TLS */

/* flashsale.redis_tls cannot be on (check_redis_tls): never called */
FsTls *
fs_tls_begin(const char *host, char **err)
{
	*err = pstrdup("TLS: flashsale was built without TLS");
	return NULL;
}

bool
fs_tls_attach(FsTls *t, redisContext *ctx, char **err)
{
	return false;
}

int
fs_tls_handshake(FsTls *t, char **err)
{
	return -1;
}

void
fs_tls_end(FsTls *t)
{
}

#endif
