# TEST DATA, not part of pbgreen and not shipped with it.
# Twisted's listing docs/core/howto/listings/pb/pb6client1.py, unchanged below the
# line of dashes, from https://github.com/twisted/twisted at commit
# 64661601a1e492a9448ac1011deb9cd9467a9e30.
# Copyright (c) Twisted Matrix Laboratories; MIT license, see LICENSE.twisted
# next to this file. tests/examples/test_ported_listings.py runs it through
# run_listing.py as the Twisted peer of the pbgreen port in examples/.
# ----------------------------------------------------------------------------
#!/usr/bin/env python

# Copyright (c) Twisted Matrix Laboratories.
# See LICENSE for details.


from twisted.cred import credentials
from twisted.internet import reactor
from twisted.spread import pb


def main():
    factory = pb.PBClientFactory()
    reactor.connectTCP("localhost", 8800, factory)
    def1 = factory.login(credentials.UsernamePassword("user1", "pass1"))
    def1.addCallback(connected)
    reactor.run()


def connected(perspective):
    print("got perspective1 ref:", perspective)
    print("asking it to foo(13)")
    perspective.callRemote("foo", 13)


main()
