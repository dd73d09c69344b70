/*
 * Command-line driver around the Bouncy Castle EST client (org.bouncycastle.est), used by
 * tests/interop/test_bouncycastle.py to exercise estkit with a client we did not write.
 *
 * Needs bcprov, bcutil, bcpkix and bctls (Debian: libbcpkix-java, libbctls-java) on the
 * class path, for compiling and running.
 *
 * Usage:
 *   java EstDriver --server https://HOST:PORT [--label L] --trust TA.pem
 *                  [--tls 1.2|1.3] [--jsse sun|bc] [--timeout MS] <op> [op options]
 *
 *   cacerts  --out FILE
 *   csrattrs
 *   enroll   --user U --password P --subject DN [--realm R] [--pop] --out-cert F
 *            (--out-key F | --key K.pem)
 *   reenroll --cert C.pem --key K.pem [--pop] --out-cert F
 *   serverkeygen --user U --password P --subject DN [--realm R] --out-cert F --out-key F
 *
 * --trust    PEM file of trust anchors for the server's TLS certificate.
 * --tls      pins the protocol (SSLContext "TLSv1.x" and the socket's enabled protocols);
 *            default: whatever the provider negotiates.
 * --jsse     TLS provider: the JDK's SunJSSE or Bouncy Castle's BCJSSE. Default sun, or bc
 *            with --pop: only BCJSSE exposes tls-unique.
 * --pop      RFC 7030 3.5 proof-of-possession linking: BC puts base64(tls-unique) into the
 *            CSR's challengePassword. tls-unique exists up to TLS 1.2 only, so use --tls 1.2.
 * --realm    have BC check the realm of the server's Basic challenge.
 * enroll generates an EC P-256 key and writes it as PKCS#8 PEM, or with --key uses an existing
 * EC key (so a request answered 202 can be resent for the same key); BC sends the Basic
 * credentials only after a 401 challenge. reenroll authenticates with the given certificate
 * (chain) and key (PKCS#8 or traditional PEM, EC or RSA) and reuses subject, SAN and key.
 *
 * Output on stdout (one record per line):
 *   TLS <protocol> <cipher suite>         once per TLS connection BC makes
 *   CERTS <n>                             cacerts
 *   ATTR <oid> | NONE                     csrattrs (NONE: 204/404 or an empty list)
 *   ENROLLED <serial hex> <subject>       enroll
 *   REENROLLED <serial hex> <subject>     reenroll
 *   SERVERKEYGEN <serial hex> <subject> <key algorithm OID>   serverkeygen (RFC 7030 4.4): BC's
 *                                         simpleEnrollWithServersideCreation; the key it parsed
 *                                         is written as PKCS#8 PEM, the certificates as PEM
 *   PENDING <epoch millis>                enroll/reenroll answered 202 (exit 3)
 *   ERROR <http status> <reason>          the server answered with an HTTP error (exit 2);
 *                                         the reason is the response body on one line
 * Anything else that goes wrong: a message on stderr and exit 1.
 * Certificates are written as PEM, the one for our key first; <subject> is RFC 2253.
 */

import java.io.ByteArrayOutputStream;
import java.io.FileReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.Reader;
import java.math.BigInteger;
import java.net.InetAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.security.KeyFactory;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.Principal;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.PublicKey;
import java.security.Security;
import java.security.cert.CertificateException;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.security.spec.ECGenParameterSpec;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.logging.Level;
import java.util.logging.Logger;

import javax.net.ssl.KeyManager;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLSession;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.SSLSocketFactory;
import javax.net.ssl.TrustManager;
import javax.net.ssl.X509ExtendedKeyManager;
import javax.net.ssl.X509TrustManager;
import javax.security.auth.x500.X500Principal;

import org.bouncycastle.asn1.ASN1ObjectIdentifier;
import org.bouncycastle.asn1.pkcs.PKCSObjectIdentifiers;
import org.bouncycastle.asn1.pkcs.PrivateKeyInfo;
import org.bouncycastle.asn1.x509.Extension;
import org.bouncycastle.asn1.x509.Extensions;
import org.bouncycastle.asn1.x509.ExtensionsGenerator;
import org.bouncycastle.asn1.x9.X9ObjectIdentifiers;
import org.bouncycastle.cert.X509CertificateHolder;
import org.bouncycastle.cert.jcajce.JcaX509CertificateConverter;
import org.bouncycastle.est.CACertsResponse;
import org.bouncycastle.est.CSRAttributesResponse;
import org.bouncycastle.est.CSRRequestResponse;
import org.bouncycastle.est.ESTAuth;
import org.bouncycastle.est.ESTException;
import org.bouncycastle.est.ESTService;
import org.bouncycastle.est.EnrollmentResponse;
import org.bouncycastle.est.HttpAuth;
import org.bouncycastle.est.jcajce.ChannelBindingProvider;
import org.bouncycastle.est.jcajce.JcaJceUtils;
import org.bouncycastle.est.jcajce.JsseDefaultHostnameAuthorizer;
import org.bouncycastle.est.jcajce.JsseESTServiceBuilder;
import org.bouncycastle.est.jcajce.JsseHostnameAuthorizer;
import org.bouncycastle.est.jcajce.SSLSocketFactoryCreator;
import org.bouncycastle.jce.provider.BouncyCastleProvider;
import org.bouncycastle.jsse.BCSSLSocket;
import org.bouncycastle.jsse.provider.BouncyCastleJsseProvider;
import org.bouncycastle.openssl.PEMKeyPair;
import org.bouncycastle.openssl.PEMParser;
import org.bouncycastle.operator.ContentSigner;
import org.bouncycastle.operator.jcajce.JcaContentSignerBuilder;
import org.bouncycastle.pkcs.PKCS10CertificationRequestBuilder;
import org.bouncycastle.pkcs.jcajce.JcaPKCS10CertificationRequestBuilder;
import org.bouncycastle.util.Store;

public final class EstDriver
{
    /** Bad command line: message on stderr, exit 1. */
    private static final class UsageError
        extends Exception
    {
        private static final long serialVersionUID = 1L;

        UsageError(String msg)
        {
            super(msg);
        }
    }

    private static final String USAGE =
        "usage: EstDriver --server https://HOST:PORT [--label L] --trust TA.pem [--tls 1.2|1.3]\n"
            + "                 [--jsse sun|bc] [--timeout MS] <op> [op options]\n"
            + "  cacerts  --out FILE\n"
            + "  csrattrs\n"
            + "  enroll   --user U --password P --subject DN [--realm R] [--pop] --out-cert F\n"
            + "           (--out-key F | --key K.pem)\n"
            + "  reenroll --cert C.pem --key K.pem [--pop] --out-cert F\n"
            + "  serverkeygen --user U --password P --subject DN [--realm R] --out-cert F --out-key F";

    private static final Set<String> GLOBAL_OPTS = new HashSet<>(
        Arrays.asList("--server", "--label", "--trust", "--tls", "--jsse", "--timeout"));
    private static final Set<String> OPS = new HashSet<>(
        Arrays.asList("cacerts", "csrattrs", "enroll", "reenroll", "serverkeygen"));
    private static final Set<String> FLAGS = new HashSet<>(Arrays.asList("--pop"));

    // BCJSSE logs its configuration at INFO/WARNING via java.util.logging; keep stderr for
    // our own diagnostics. (Held in a field so the configured logger is not collected.)
    private static final Logger BCJSSE_LOG = Logger.getLogger("org.bouncycastle.jsse");

    private final Map<String, String> opts = new HashMap<>();
    private final Set<String> flags = new HashSet<>();
    private String op;

    public static void main(String[] args)
    {
        int rc;
        try
        {
            rc = new EstDriver().run(args);
        }
        catch (UsageError e)
        {
            System.err.println("EstDriver: " + e.getMessage());
            System.err.println(USAGE);
            rc = 1;
        }
        catch (ESTException e)
        {
            rc = reportEstException(e);
        }
        catch (Exception e)
        {
            System.err.println("EstDriver: " + describe(e));
            e.printStackTrace(System.err);
            rc = 1;
        }
        System.out.flush();
        System.exit(rc);
    }

    private static int reportEstException(ESTException e)
    {
        int status = e.getStatusCode();
        if (status < 300)
        {
            // Not an HTTP error answer: TLS failure, protocol error, undecodable body...
            System.err.println("EstDriver: " + describe(e));
            if (String.valueOf(e.getMessage()).contains("TLS unique"))
            {
                System.err.println("EstDriver: tls-unique exists up to TLS 1.2 only; use --tls 1.2 with --pop");
            }
            e.printStackTrace(System.err);
            return 1;
        }
        String reason = readBody(e.getBody());
        if (reason.isEmpty())
        {
            reason = String.valueOf(e.getMessage());
        }
        System.out.println("ERROR " + status + " " + reason);
        System.err.println("EstDriver: " + e.getMessage());
        return 2;
    }

    private static String readBody(InputStream in)
    {
        if (in == null)
        {
            return "";
        }
        try
        {
            ByteArrayOutputStream bos = new ByteArrayOutputStream();
            byte[] buf = new byte[4096];
            int n;
            while ((n = in.read(buf)) >= 0)
            {
                bos.write(buf, 0, n);
            }
            // One line: collapse all whitespace runs.
            return new String(bos.toByteArray(), StandardCharsets.UTF_8).trim().replaceAll("\\s+", " ");
        }
        catch (IOException ex)
        {
            return "";
        }
    }

    private static String describe(Throwable t)
    {
        StringBuilder sb = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause())
        {
            if (sb.length() > 0)
            {
                sb.append(" <- ");
            }
            sb.append(c.getClass().getName()).append(": ").append(c.getMessage());
            if (c.getCause() == c)
            {
                break;
            }
        }
        return sb.toString();
    }

    // ------------------------------------------------------------------ command line

    private void parse(String[] args)
        throws UsageError
    {
        for (int i = 0; i < args.length; i++)
        {
            String a = args[i];
            if (OPS.contains(a) && op == null)
            {
                op = a;
            }
            else if (FLAGS.contains(a))
            {
                flags.add(a);
            }
            else if (a.startsWith("--"))
            {
                if (i + 1 >= args.length)
                {
                    throw new UsageError("option " + a + " needs a value");
                }
                if (!GLOBAL_OPTS.contains(a) && op == null)
                {
                    throw new UsageError("unknown global option " + a);
                }
                opts.put(a, args[++i]);
            }
            else
            {
                throw new UsageError("unexpected argument " + a);
            }
        }
        if (op == null)
        {
            throw new UsageError("no operation given");
        }
    }

    private String need(String name)
        throws UsageError
    {
        String v = opts.get(name);
        if (v == null)
        {
            throw new UsageError(op + " needs " + name);
        }
        return v;
    }

    private int run(String[] args)
        throws Exception
    {
        parse(args);
        BCJSSE_LOG.setLevel(Level.SEVERE);
        // "BC" is needed by JcaJceUtils' cert path trust manager; added last so it
        // does not change which providers the JDK picks for anything else.
        if (Security.getProvider(BouncyCastleProvider.PROVIDER_NAME) == null)
        {
            Security.addProvider(new BouncyCastleProvider());
        }
        switch (op)
        {
        case "cacerts":
            return doCaCerts();
        case "csrattrs":
            return doCsrAttrs();
        case "enroll":
            return doEnroll();
        case "reenroll":
            return doReenroll();
        case "serverkeygen":
            return doServerKeygen();
        default:
            throw new UsageError("unknown operation " + op);
        }
    }

    // ------------------------------------------------------------------ service setup

    /**
     * Hands BC's client plain JSSE sockets from our SSLContext, pinned to the protocol asked
     * for, and counts the connections so the TLS line is printed once per connection.
     */
    private static final class PinnedSocketFactoryCreator
        implements SSLSocketFactoryCreator
    {
        private final SSLContext context;
        private final String[] protocols;
        int connections;

        PinnedSocketFactoryCreator(SSLContext context, String[] protocols)
        {
            this.context = context;
            this.protocols = protocols;
        }

        public boolean isTrusted()
        {
            return true; // the context's trust manager holds the --trust anchors
        }

        public SSLSocketFactory createFactory()
        {
            final SSLSocketFactory f = context.getSocketFactory();
            return new SSLSocketFactory()
            {
                private Socket pin(Socket s)
                {
                    if (protocols != null)
                    {
                        ((SSLSocket)s).setEnabledProtocols(protocols);
                    }
                    connections++;
                    return s;
                }

                public String[] getDefaultCipherSuites()
                {
                    return f.getDefaultCipherSuites();
                }

                public String[] getSupportedCipherSuites()
                {
                    return f.getSupportedCipherSuites();
                }

                public Socket createSocket()
                    throws IOException
                {
                    return pin(f.createSocket());
                }

                public Socket createSocket(Socket s, String host, int port, boolean autoClose)
                    throws IOException
                {
                    return pin(f.createSocket(s, host, port, autoClose));
                }

                public Socket createSocket(String host, int port)
                    throws IOException
                {
                    return pin(f.createSocket(host, port));
                }

                public Socket createSocket(String host, int port, InetAddress local, int localPort)
                    throws IOException
                {
                    return pin(f.createSocket(host, port, local, localPort));
                }

                public Socket createSocket(InetAddress host, int port)
                    throws IOException
                {
                    return pin(f.createSocket(host, port));
                }

                public Socket createSocket(InetAddress host, int port, InetAddress local, int localPort)
                    throws IOException
                {
                    return pin(f.createSocket(host, port, local, localPort));
                }
            };
        }
    }

    /** Prints what each connection negotiated, then lets BC's default authorizer decide. */
    private static final class RecordingHostnameAuthorizer
        implements JsseHostnameAuthorizer
    {
        private final JsseHostnameAuthorizer delegate =
            new JsseDefaultHostnameAuthorizer(Collections.<String>emptySet());
        private final PinnedSocketFactoryCreator sockets;
        private int reported;

        RecordingHostnameAuthorizer(PinnedSocketFactoryCreator sockets)
        {
            this.sockets = sockets;
        }

        public boolean verified(String name, SSLSession session)
            throws IOException
        {
            // BC 1.72 asks more than once per connection; report each connection once.
            if (reported != sockets.connections)
            {
                reported = sockets.connections;
                System.out.println("TLS " + session.getProtocol() + " " + session.getCipherSuite());
            }
            return delegate.verified(name, session);
        }
    }

    /** tls-unique via BCJSSE's BCSSLConnection; not defined for TLS 1.3 (RFC 8446 C.5). */
    private static final class BcjsseChannelBinding
        implements ChannelBindingProvider
    {
        public boolean canAccessChannelBinding(Socket sock)
        {
            if (!(sock instanceof BCSSLSocket) || !(sock instanceof SSLSocket))
            {
                return false;
            }
            String proto = ((SSLSocket)sock).getSession().getProtocol();
            return !"TLSv1.3".equals(proto);
        }

        public byte[] getChannelBinding(Socket sock, String binding)
        {
            return ((BCSSLSocket)sock).getConnection().getChannelBinding(binding);
        }
    }

    /** Always offers the one key and chain it was given, whatever issuers the server lists. */
    private static final class FixedKeyManager
        extends X509ExtendedKeyManager
    {
        private static final String ALIAS = "client";
        private final PrivateKey key;
        private final X509Certificate[] chain;

        FixedKeyManager(PrivateKey key, X509Certificate[] chain)
        {
            this.key = key;
            this.chain = chain;
        }

        public String[] getClientAliases(String keyType, Principal[] issuers)
        {
            return new String[]{ALIAS};
        }

        public String chooseClientAlias(String[] keyTypes, Principal[] issuers, Socket socket)
        {
            return ALIAS;
        }

        public String chooseEngineClientAlias(String[] keyTypes, Principal[] issuers, SSLEngine engine)
        {
            return ALIAS;
        }

        public String[] getServerAliases(String keyType, Principal[] issuers)
        {
            return null;
        }

        public String chooseServerAlias(String keyType, Principal[] issuers, Socket socket)
        {
            return null;
        }

        public X509Certificate[] getCertificateChain(String alias)
        {
            return ALIAS.equals(alias) ? chain.clone() : null;
        }

        public PrivateKey getPrivateKey(String alias)
        {
            return ALIAS.equals(alias) ? key : null;
        }
    }

    private ESTService buildService(KeyManager keyManager, boolean pop)
        throws Exception
    {
        String server = need("--server");
        if (server.startsWith("https://"))
        {
            server = server.substring("https://".length());
        }
        else if (server.contains("://"))
        {
            throw new UsageError("--server must be an https:// URL or HOST:PORT");
        }
        while (server.endsWith("/"))
        {
            server = server.substring(0, server.length() - 1);
        }

        List<X509Certificate> anchors = readCerts(need("--trust"));
        if (anchors.isEmpty())
        {
            throw new UsageError("no certificates in " + opts.get("--trust"));
        }
        Set<TrustAnchor> tas = new HashSet<>();
        for (X509Certificate c : anchors)
        {
            tas.add(new TrustAnchor(c, null));
        }
        final X509TrustManager pathTm = JcaJceUtils.getCertPathTrustManager(tas, null)[0];
        // BC's path-building trust manager, plus BC's check that the server certificate
        // is fit for TLS server use (key usage / extended key usage).
        X509TrustManager tm = new X509TrustManager()
        {
            public void checkClientTrusted(X509Certificate[] chain, String authType)
                throws CertificateException
            {
                throw new CertificateException("client side only");
            }

            public void checkServerTrusted(X509Certificate[] chain, String authType)
                throws CertificateException
            {
                pathTm.checkServerTrusted(chain, authType);
                JcaJceUtils.validateServerCertUsage(chain[0]);
            }

            public X509Certificate[] getAcceptedIssuers()
            {
                return pathTm.getAcceptedIssuers();
            }
        };

        String tls = opts.get("--tls");
        String[] protocols = null;
        if (tls != null)
        {
            if (!tls.equals("1.2") && !tls.equals("1.3"))
            {
                throw new UsageError("--tls must be 1.2 or 1.3");
            }
            protocols = new String[]{"TLSv" + tls};
        }

        String jsse = opts.getOrDefault("--jsse", pop ? "bc" : "sun");
        Provider provider;
        if (jsse.equals("bc"))
        {
            provider = new BouncyCastleJsseProvider();
        }
        else if (jsse.equals("sun"))
        {
            if (pop)
            {
                throw new UsageError("--pop needs --jsse bc (tls-unique comes from BCJSSE)");
            }
            provider = Security.getProvider("SunJSSE");
        }
        else
        {
            throw new UsageError("--jsse must be sun or bc");
        }
        SSLContext context = SSLContext.getInstance(protocols == null ? "TLS" : protocols[0], provider);
        context.init(keyManager == null ? null : new KeyManager[]{keyManager}, new TrustManager[]{tm}, null);
        PinnedSocketFactoryCreator sockets = new PinnedSocketFactoryCreator(context, protocols);

        JsseESTServiceBuilder b = new JsseESTServiceBuilder(server, sockets);
        if (jsse.equals("bc"))
        {
            b.withChannelBindingProvider(new BcjsseChannelBinding());
        }
        b.withHostNameAuthorizer(new RecordingHostnameAuthorizer(sockets));
        b.withTimeout(Integer.parseInt(opts.getOrDefault("--timeout", "30000")));
        if (opts.containsKey("--label"))
        {
            b.withLabel(opts.get("--label"));
        }
        return b.build();
    }

    // ------------------------------------------------------------------ operations

    private int doCaCerts()
        throws Exception
    {
        String out = need("--out");
        ESTService est = buildService(null, false);
        CACertsResponse resp = est.getCACerts();
        List<X509Certificate> certs = new ArrayList<>();
        if (resp.hasCertificates())
        {
            for (X509CertificateHolder h : ESTService.storeToArray(resp.getCertificateStore()))
            {
                certs.add(toJca(h));
            }
        }
        writeCerts(out, certs);
        System.out.println("CERTS " + certs.size());
        return 0;
    }

    private int doCsrAttrs()
        throws Exception
    {
        ESTService est = buildService(null, false);
        CSRRequestResponse resp = est.getCSRAttributes();
        if (!resp.hasAttributesResponse() || resp.getAttributesResponse().isEmpty())
        {
            System.out.println("NONE");
            return 0;
        }
        CSRAttributesResponse attrs = resp.getAttributesResponse();
        for (ASN1ObjectIdentifier oid : attrs.getRequirements())
        {
            System.out.println("ATTR " + oid.getId());
        }
        return 0;
    }

    private int doEnroll()
        throws Exception
    {
        String user = need("--user");
        String password = need("--password");
        String subject = need("--subject");
        String outCert = need("--out-cert");
        String keyFile = opts.get("--key");
        String outKey = keyFile == null ? need("--out-key") : null;
        boolean pop = flags.contains("--pop");

        KeyPair kp;
        if (keyFile != null)
        {
            PrivateKey existing = readPrivateKey(keyFile);
            kp = new KeyPair(ecPublicKeyOf(existing), existing);
        }
        else
        {
            KeyPairGenerator kpg = KeyPairGenerator.getInstance("EC");
            kpg.initialize(new ECGenParameterSpec("secp256r1"));
            kp = kpg.generateKeyPair();
        }

        PKCS10CertificationRequestBuilder csr =
            new JcaPKCS10CertificationRequestBuilder(new X500Principal(subject), kp.getPublic());
        ContentSigner signer = new JcaContentSignerBuilder("SHA256withECDSA").build(kp.getPrivate());

        // Basic auth; BC only sends the credentials once the server answers 401.
        String realm = opts.get("--realm");
        ESTAuth auth = realm == null
            ? new HttpAuth(user, password.toCharArray())
            : new HttpAuth(realm, user, password.toCharArray());

        ESTService est = buildService(null, pop);
        EnrollmentResponse resp = pop
            ? est.simpleEnrollPoP(false, csr, signer, auth)
            : est.simpleEnroll(false, csr.build(signer), auth);

        if (!resp.isCompleted())
        {
            System.out.println("PENDING " + resp.getNotBefore());
            return 3;
        }
        X509Certificate issued = writeIssued(resp, kp.getPublic(), outCert);
        if (outKey != null)
        {
            writePem(outKey, "PRIVATE KEY", kp.getPrivate().getEncoded());
        }
        System.out.println("ENROLLED " + serialHex(issued) + " " + subjectOf(issued));
        return 0;
    }

    private int doReenroll()
        throws Exception
    {
        String certFile = need("--cert");
        String keyFile = need("--key");
        String outCert = need("--out-cert");
        boolean pop = flags.contains("--pop");

        List<X509Certificate> chain = readCerts(certFile);
        if (chain.isEmpty())
        {
            throw new UsageError("no certificate in " + certFile);
        }
        X509Certificate current = chain.get(0);
        PrivateKey key = readPrivateKey(keyFile);

        // RFC 7030 4.2.2: same Subject and SubjectAltName as the certificate being renewed.
        X509CertificateHolder holder = new X509CertificateHolder(current.getEncoded());
        PKCS10CertificationRequestBuilder csr =
            new PKCS10CertificationRequestBuilder(holder.getSubject(), holder.getSubjectPublicKeyInfo());
        Extensions exts = holder.getExtensions();
        if (exts != null && exts.getExtension(Extension.subjectAlternativeName) != null)
        {
            ExtensionsGenerator gen = new ExtensionsGenerator();
            gen.addExtension(exts.getExtension(Extension.subjectAlternativeName));
            csr.addAttribute(PKCSObjectIdentifiers.pkcs_9_at_extensionRequest, gen.generate());
        }
        String sigAlg;
        switch (key.getAlgorithm())
        {
        case "EC":
        case "ECDSA":
            sigAlg = "SHA256withECDSA";
            break;
        case "RSA":
            sigAlg = "SHA256withRSA";
            break;
        default:
            throw new UsageError("unsupported key algorithm " + key.getAlgorithm());
        }
        ContentSigner signer = new JcaContentSignerBuilder(sigAlg).build(key);

        ESTService est = buildService(new FixedKeyManager(key, chain.toArray(new X509Certificate[0])), pop);
        EnrollmentResponse resp = pop
            ? est.simpleEnrollPoP(true, csr, signer, null)
            : est.simpleEnroll(true, csr.build(signer), null);

        if (!resp.isCompleted())
        {
            System.out.println("PENDING " + resp.getNotBefore());
            return 3;
        }
        X509Certificate issued = writeIssued(resp, current.getPublicKey(), outCert);
        System.out.println("REENROLLED " + serialHex(issued) + " " + subjectOf(issued));
        return 0;
    }

    private int doServerKeygen()
        throws Exception
    {
        String user = need("--user");
        String password = need("--password");
        String subject = need("--subject");
        String outCert = need("--out-cert");
        String outKey = need("--out-key");

        // The CSR only names the subject; its key is ignored by the server (RFC 7030 4.4.1).
        KeyPairGenerator kpg = KeyPairGenerator.getInstance("EC");
        kpg.initialize(new ECGenParameterSpec("secp256r1"));
        KeyPair kp = kpg.generateKeyPair();
        PKCS10CertificationRequestBuilder csr =
            new JcaPKCS10CertificationRequestBuilder(new X500Principal(subject), kp.getPublic());
        ContentSigner signer = new JcaContentSignerBuilder("SHA256withECDSA").build(kp.getPrivate());

        String realm = opts.get("--realm");
        ESTAuth auth = realm == null
            ? new HttpAuth(user, password.toCharArray())
            : new HttpAuth(realm, user, password.toCharArray());
        ESTService est = buildService(null, false);
        EnrollmentResponse resp = est.simpleEnrollWithServersideCreation(csr.build(signer), auth);
        if (!resp.isCompleted())
        {
            System.out.println("PENDING " + resp.getNotBefore());
            return 3;
        }
        PrivateKeyInfo info = resp.getPrivateKeyInfo();
        if (info == null)
        {
            throw new IOException("the serverkeygen answer carried no PKCS#8 private key");
        }
        List<X509Certificate> certs = new ArrayList<>();
        for (X509CertificateHolder h : ESTService.storeToArray(resp.getStore()))
        {
            certs.add(toJca(h));
        }
        if (certs.isEmpty())
        {
            throw new IOException("the serverkeygen answer carried no certificate");
        }
        writeCerts(outCert, certs);
        writePem(outKey, "PRIVATE KEY", info.getEncoded());
        X509Certificate issued = certs.get(0);
        System.out.println("SERVERKEYGEN " + serialHex(issued) + " " + subjectOf(issued) + " "
            + info.getPrivateKeyAlgorithm().getAlgorithm().getId());
        return 0;
    }

    // ------------------------------------------------------------------ helpers

    /** Writes the certificate for our public key first, then anything else the server sent. */
    private static X509Certificate writeIssued(EnrollmentResponse resp, PublicKey ours, String file)
        throws Exception
    {
        Store<X509CertificateHolder> store = resp.getStore();
        if (store == null)
        {
            throw new IOException("enrollment response carries no certificates");
        }
        X509Certificate issued = null;
        List<X509Certificate> others = new ArrayList<>();
        for (X509CertificateHolder h : ESTService.storeToArray(store))
        {
            X509Certificate c = toJca(h);
            if (issued == null && Arrays.equals(c.getPublicKey().getEncoded(), ours.getEncoded()))
            {
                issued = c;
            }
            else
            {
                others.add(c);
            }
        }
        if (issued == null)
        {
            throw new IOException("no certificate for our public key among the "
                + (others.size()) + " returned");
        }
        List<X509Certificate> all = new ArrayList<>();
        all.add(issued);
        all.addAll(others);
        writeCerts(file, all);
        return issued;
    }

    private static X509Certificate toJca(X509CertificateHolder h)
        throws CertificateException
    {
        return new JcaX509CertificateConverter().getCertificate(h);
    }

    private static String serialHex(X509Certificate c)
    {
        BigInteger s = c.getSerialNumber();
        return s.toString(16);
    }

    private static String subjectOf(X509Certificate c)
    {
        return c.getSubjectX500Principal().getName(X500Principal.RFC2253);
    }

    private static List<X509Certificate> readCerts(String file)
        throws Exception
    {
        List<X509Certificate> out = new ArrayList<>();
        try (Reader r = new FileReader(file, StandardCharsets.US_ASCII);
             PEMParser p = new PEMParser(r))
        {
            Object o;
            while ((o = p.readObject()) != null)
            {
                if (o instanceof X509CertificateHolder)
                {
                    out.add(toJca((X509CertificateHolder)o));
                }
            }
        }
        return out;
    }

    /** The public half of an EC private key: Q = d*G on the key's curve. */
    private static PublicKey ecPublicKeyOf(PrivateKey key)
        throws Exception
    {
        if (!(key instanceof java.security.interfaces.ECPrivateKey))
        {
            throw new UsageError("enroll --key needs an EC key, not " + key.getAlgorithm());
        }
        java.security.interfaces.ECPrivateKey ecKey = (java.security.interfaces.ECPrivateKey)key;
        org.bouncycastle.math.ec.ECPoint q =
            org.bouncycastle.jcajce.provider.asymmetric.util.EC5Util.convertSpec(ecKey.getParams())
                .getG().multiply(ecKey.getS()).normalize();
        java.security.spec.ECPoint w = new java.security.spec.ECPoint(
            q.getAffineXCoord().toBigInteger(), q.getAffineYCoord().toBigInteger());
        return KeyFactory.getInstance("EC")
            .generatePublic(new java.security.spec.ECPublicKeySpec(w, ecKey.getParams()));
    }

    private static PrivateKey readPrivateKey(String file)
        throws Exception
    {
        PrivateKeyInfo info = null;
        try (Reader r = new FileReader(file, StandardCharsets.US_ASCII);
             PEMParser p = new PEMParser(r))
        {
            Object o;
            while (info == null && (o = p.readObject()) != null)
            {
                if (o instanceof PrivateKeyInfo)
                {
                    info = (PrivateKeyInfo)o;
                }
                else if (o instanceof PEMKeyPair)
                {
                    info = ((PEMKeyPair)o).getPrivateKeyInfo();
                }
            }
        }
        if (info == null)
        {
            throw new IOException("no unencrypted private key in " + file);
        }
        // Use the JDK's own key classes ("EC"/"RSA"): BC's JcaPEMKeyConverter would give an
        // "ECDSA" key, which SunJSSE will not offer for client authentication.
        ASN1ObjectIdentifier alg = info.getPrivateKeyAlgorithm().getAlgorithm();
        String kfAlg;
        if (alg.equals(X9ObjectIdentifiers.id_ecPublicKey))
        {
            kfAlg = "EC";
        }
        else if (alg.equals(PKCSObjectIdentifiers.rsaEncryption))
        {
            kfAlg = "RSA";
        }
        else
        {
            throw new IOException("unsupported private key algorithm " + alg.getId() + " in " + file);
        }
        return KeyFactory.getInstance(kfAlg).generatePrivate(new PKCS8EncodedKeySpec(info.getEncoded()));
    }

    private static void writeCerts(String file, Collection<X509Certificate> certs)
        throws Exception
    {
        StringBuilder sb = new StringBuilder();
        for (X509Certificate c : certs)
        {
            sb.append(pem("CERTIFICATE", c.getEncoded()));
        }
        Files.write(Paths.get(file), sb.toString().getBytes(StandardCharsets.US_ASCII));
    }

    private static void writePem(String file, String type, byte[] der)
        throws IOException
    {
        Files.write(Paths.get(file), pem(type, der).getBytes(StandardCharsets.US_ASCII));
    }

    private static String pem(String type, byte[] der)
    {
        String b64 = Base64.getMimeEncoder(64, new byte[]{'\n'}).encodeToString(der);
        return "-----BEGIN " + type + "-----\n" + b64 + "\n-----END " + type + "-----\n";
    }
}
