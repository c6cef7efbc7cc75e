# TEST DATA, not part of pbgreen and not shipped with it.
# Twisted's listing docs/core/howto/listings/pb/pb6server.py, unchanged below the
# line of dashes, from https://github.com/twisted/twisted at commit
# 64661601a1e492a9448ac1011deb9cd9467a9e30.
# Copyright (c) Twisted Matrix Laboratories; MIT license, see LICENSE.twisted
# next to this file. tests/examples/test_ported_listings.py runs it through
# run_listing.py as the Twisted peer of the pbgreen port in examples/.
# ----------------------------------------------------------------------------
#!/usr/bin/env python

# Copyright (c) Twisted Matrix Laboratories.
# See LICENSE for details.


from zope.interface import implementer

from twisted.cred import checkers, portal
from twisted.internet import reactor
from twisted.spread import pb


class MyPerspective(pb.Avatar):
    def __init__(self, name):
        self.name = name

    def perspective_foo(self, arg):
        print("I am", self.name, "perspective_foo(", arg, ") called on", self)


@implementer(portal.IRealm)
class MyRealm:
    def requestAvatar(self, avatarId, mind, *interfaces):
        if pb.IPerspective not in interfaces:
            raise NotImplementedError
        return pb.IPerspective, MyPerspective(avatarId), lambda: None


p = portal.Portal(MyRealm())
c = checkers.InMemoryUsernamePasswordDatabaseDontUse(user1="pass1", user2="pass2")
p.registerChecker(c)
reactor.listenTCP(8800, pb.PBServerFactory(p))
reactor.run()
