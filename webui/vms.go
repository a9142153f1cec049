package webui

import "github.com/gin-gonic/gin"

// requireVMs answers 404 on a server without VMs. (placeholder, being written)
func (s *Server) requireVMs(c *gin.Context) {
	if s.cfg.VMs == nil {
		apiError(c, 404, "this unit has no virtual machines")
		c.Abort()
	}
}

func (s *Server) vmRoutes(g *gin.RouterGroup) {}
