package webui

import "github.com/gin-gonic/gin"

func (s *Server) consoleRoutes(e *gin.Engine, api *gin.RouterGroup) {}
